"""What every kind of run input hands the engine (`RunInputs`: the eval dataset and a per-window training
dataset factory) and the small helpers they share. A leaf below protocols/run_inputs.py, which picks the
builder, and the builders of the video track (sequence_inputs, frame_inputs) and the format-only baseline
(format_inputs), which all import it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from torch.utils.data import Dataset

from protocols import faults
from protocols.cached_data import ArrayEval, ArrayTrainCopies
from protocols.crop_data import GroupedRows, ReferenceCropRows, ReferenceEvalStore
from protocols.pipeline import InputPipeline
from protocols.resume import check_stop

_chunks_written = [0]


def stop_between_chunks() -> None:
    """Called after every store chunk written: stop here on a signal (preemption); crash here in resume tests."""
    _chunks_written[0] += 1
    faults.die_if("store_chunk", 0, _chunks_written[0])
    check_stop("while building a cache store (its finished chunks are kept; run again to resume)")


@dataclass
class RunInputs:
    """Eval dataset (len() = number of eval items) and a per-window training dataset factory.

    Sequence runs (protocols/sequence_inputs.py) score segments: ``fuse(item logits)`` turns them into the
    per-video (scores, logits, extra npz arrays); ``callbacks(k, ids, sampler)`` adds Lightning callbacks to a
    window's training (best-validation selection).
    """

    eval_ds: Dataset
    make_train: Callable[..., Dataset]  # (ids, window) -> training copies
    train_cfg: dict
    eval_precision: str
    eval_key: dict
    describe: dict = field(default_factory=dict)
    release_train: Callable[[], None] = lambda: None  # after a window's training: drop its per-window store
    pipeline: InputPipeline | None = None  # the resolved eval.pipeline / eval.input / eval.normalize
    fuse: Callable | None = None
    callbacks: Callable | None = None

    weighted: object | None = None  # the manifest when benchmark.real_sampling=weighted (class-weighted loss)

    def window_callbacks(self, k: int, ids: list[int], sampler) -> list:
        out = list(self.callbacks(k, ids, sampler)) if self.callbacks else []
        if self.weighted is not None:
            from benchmark.windows_plan import class_weights
            from protocols.module import ClassWeights

            by_id = {s.id: s.label for s in self.weighted.split("train")}
            out.append(ClassWeights(class_weights([by_id[int(i)] for i in ids])))
        return out

    def __len__(self) -> int:
        return len(self.eval_ds)

    def eval_dataset(self) -> Dataset:
        return self.eval_ds

    def train_dataset(self, ids: list[int], window: int = 0) -> Dataset:
        """Training copies of window `window`'s subset `ids` (in the subset's order)."""
        return self.make_train(ids, window)

    def workers(self, ds: Dataset) -> int:
        return loader_workers(ds, self.train_cfg)


def loader_workers(ds: Dataset, train_cfg: dict) -> int:
    """DataLoader workers: none for in-memory arrays (workers would only add copies), the configured number for
    datasets that decode images."""
    in_memory = (ArrayEval, ArrayTrainCopies, ReferenceEvalStore, ReferenceCropRows, GroupedRows)
    return 0 if isinstance(ds, in_memory) else int(train_cfg["num_workers"])


def features_in(ds: Dataset) -> bool:
    """Whether a dataset yields probe features (the head alone runs) rather than pixels."""
    return bool(getattr(ds, "features_in", False))
