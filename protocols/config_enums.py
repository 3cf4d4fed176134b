"""The closed sets of values of the config's enum-valued keys, one `StrEnum` each.

A member equals its string (`Precision.BF16 == "bf16-mixed"`), so the raw config, its hash and run.json keep
the plain strings while code tests membership and properties instead of comparing strings. Two more enums live
with the data they describe: `benchmark.windows_plan.BenchmarkKind` (benchmark.type) and
`benchmark.formats.DegradationProfile` (degradation.profile). Strategy and detector names are open registries
(plugins add names), checked against their registries instead. This module imports nothing heavy.
"""

from __future__ import annotations

from enum import StrEnum


class Precision(StrEnum):
    """train.precision and eval.precision."""

    AUTO = "auto"  # bf16-mixed where the hardware supports it, else 32-true
    FP32 = "32-true"
    BF16 = "bf16-mixed"
    FP16 = "16-mixed"


class EvalPipeline(StrEnum):
    """eval.pipeline: the input pipeline from degraded eval image to model input."""

    NATIVE = "native"  # the detector's own OpenCV resize/crop
    REFERENCE = "reference"  # AI-GenBench's exact torchvision v2 model input


class EvalInput(StrEnum):
    """eval.input: how an eval image becomes the model's input size."""

    CENTER_CROP = "center_crop"
    RESIZE_CENTER_CROP = "resize_center_crop"
    RESIZE = "resize"
    FIVE_CROP = "five_crop"


class Normalization(StrEnum):
    """eval.normalize: which mean/std normalise the model input."""

    CLIP = "clip"
    BACKBONE = "backbone"


class TrainAugmentation(StrEnum):
    """train.augmentation."""

    NONE = "none"
    LIGHT = "light"
    BASELINE = "baseline"
    AIGENBENCH_BASELINE = "aigenbench-baseline"  # the reference's, exactly (streamed)


class Selection(StrEnum):
    """train.selection: which weights end a window."""

    LAST = "last"
    BEST = "best"
    EARLY_STOPPING = "early_stopping"
    AVERAGE = "average"
    BEST_VAL_ACCURACY = "best_val_accuracy"


class RealSampling(StrEnum):
    """benchmark.real_sampling."""

    UNIQUE = "unique"
    REPEAT = "repeat"
    WEIGHTED = "weighted"


class Optimizer(StrEnum):
    SGD = "sgd"
    ADAM = "adam"
    ADAMW = "adamw"


class Scheduler(StrEnum):
    ONECYCLE = "onecycle"
    CONSTANT = "constant"


class CacheTrainInputs(StrEnum):
    """cache.train_inputs (the booleans of older configs mean CACHED and STREAM)."""

    AUTO = "auto"
    CACHED = "cached"
    PER_WINDOW = "per_window"
    STREAM = "stream"


class CacheVerify(StrEnum):
    FAST = "fast"
    SAMPLE = "sample"
    FULL = "full"


class SequenceProfile(StrEnum):
    FIXED = "fixed"
    LRNET_V1 = "lrnet-v1"


class SequenceAggregate(StrEnum):
    VOTE = "vote"
    MEAN = "mean"
    MAX = "max"


class TestEvery(StrEnum):
    __test__ = False  # not a pytest test class

    WINDOW = "window"
    LAST = "last"


class Logger(StrEnum):
    CSV = "csv"
    TENSORBOARD = "tensorboard"
    WANDB = "wandb"


class WandbMode(StrEnum):
    OFFLINE = "offline"
    ONLINE = "online"
    DISABLED = "disabled"


class Accelerator(StrEnum):
    AUTO = "auto"
    CPU = "cpu"
    GPU = "gpu"
    CUDA = "cuda"


class DistributedStrategy(StrEnum):
    """`strategy`: Lightning's distributed strategy (not the continual-learning `cl_strategy`)."""

    AUTO = "auto"
    DDP = "ddp"


def values(enum: type[StrEnum]) -> tuple[str, ...]:
    """The plain string values of an enum, in declaration order."""
    return tuple(m.value for m in enum)
