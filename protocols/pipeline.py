"""Which input pipeline a run feeds its detector: `eval.pipeline`, `eval.input`, `eval.normalize` resolved (DESIGN §9).

- ``native`` (default): the detector's own input — OpenCV resize/crop of the degraded uint8 image, normalised with
  the backbone's own statistics.
- ``reference``: exactly AI-GenBench's model input — torchvision v2 ``Resize((S, S))`` / ``CenterCrop(S)`` /
  ``FiveCrop(S)`` (centre crop when a side is <= S) on the chain's output in its own type, ``ToDtype(float32,
  scale=True)``, then normalisation with the CLIP statistics for every backbone, as the reference does
  (`benchmark.model_input`).

`eval.normalize` (``clip`` | ``backbone``; null = the pipeline's default) applies to every input the detector sees,
training copies included, so training and evaluation agree.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from benchmark.images import EVAL_INPUT_STRATEGIES, crops_per_image
from benchmark.model_input import CLIP_MEAN, CLIP_STD, REFERENCE_STRATEGIES
from protocols.config import ConfigError
from protocols.config_model import ConfigLike, run_config

PIPELINES = ("native", "reference")
NORMALIZE_CHOICES = ("clip", "backbone")
DEFAULT_INPUT = {"reference": "resize"}  # native: the detector's own eval_resize
DEFAULT_NORMALIZE = {"native": "backbone", "reference": "clip"}


@dataclass(frozen=True)
class InputPipeline:
    """The resolved input pipeline of a run (recorded in run.json, every predictions.npz and the leaderboard)."""

    pipeline: str  # native | reference
    input: str  # center_crop | resize_center_crop | resize | five_crop (reference: resize | center_crop | five_crop)
    normalize: str  # clip | backbone
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    size: int

    @property
    def multi_crop(self) -> bool:
        """Whether an image is scored as several crops (five_crop), fused by the mean of their sigmoid scores."""
        return crops_per_image(self.input) > 1

    def to_dict(self) -> dict:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d


def check_pipeline_config(cfg: ConfigLike) -> None:
    """The eval.pipeline / eval.input / eval.normalize values alone, before any work (resolve_pipeline repeats this
    with the detector's defaults filled in)."""
    from types import SimpleNamespace

    resolve_pipeline(cfg, SimpleNamespace(eval_resize="center_crop", mean=(0.0,) * 3, std=(1.0,) * 3, input_size=1))


def resolve_pipeline(cfg: ConfigLike, meta) -> InputPipeline:
    """The pipeline for a detector with metadata `meta` under config `cfg`; a bad combination is a ConfigError
    (each value alone was checked when the config was resolved)."""

    ev = run_config(cfg).eval
    pipeline = ev.pipeline.value
    strategy = ev.input.value if ev.input is not None else DEFAULT_INPUT.get(pipeline) or meta.eval_resize
    allowed = REFERENCE_STRATEGIES if pipeline == "reference" else EVAL_INPUT_STRATEGIES
    if strategy not in allowed:
        extra = " (the reference has no resize-then-crop; use resize or center_crop)" \
            if pipeline == "reference" and strategy in EVAL_INPUT_STRATEGIES else ""
        raise ConfigError(f"eval.input: {strategy!r} is not an input of the {pipeline} pipeline; expected one of "
                          f"{', '.join(allowed)}{extra}")
    normalize = ev.normalize.value if ev.normalize is not None else DEFAULT_NORMALIZE[pipeline]
    mean, std = (CLIP_MEAN, CLIP_STD) if normalize == "clip" else (tuple(meta.mean), tuple(meta.std))
    return InputPipeline(pipeline, strategy, normalize, tuple(float(v) for v in mean),
                         tuple(float(v) for v in std), int(meta.input_size))


__all__ = ["PIPELINES", "NORMALIZE_CHOICES", "InputPipeline", "check_pipeline_config", "resolve_pipeline"]
