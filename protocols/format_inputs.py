"""Run inputs of a format-only detector (detector input kind "format"): the source-format features of every
sample, served from the manifest instead of pixels.

The detector contract takes tensors; for this detector the tensor is `benchmark.formats.format_features` of a
sample (a one-hot of its format and JPEG quality bin), so the engine's windows, samplers, training step, scoring,
npz files and leaderboard are the very ones every detector goes through: only what a batch holds differs.

- training: the training images' own source formats (training images are never degraded), `augmentation_factor`
  copies per image like any detector (identical copies: the same optimizer steps as a pixel detector);
- evaluation: the format of the file the evaluation decodes — the source's, or JPEG at Q for every image under a
  `<profile>+reencode<Q>` degradation profile (`benchmark.formats.evaluated_format`). The mandatory chain's own
  random JPEG steps come after and do not change it: the baseline measures the source-format shortcut.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from benchmark.formats import FEATURE_NAMES, evaluated_format, format_features
from benchmark.manifest import Manifest, Sample
from protocols.config_model import ConfigLike, run_config


class FormatFeatures(Dataset):
    """Rows of format features; training items (x, label, id) × `factor` copies, eval items (x, position)."""

    features_in = False

    def __init__(self, features: np.ndarray, labels: Sequence[int] | None = None, ids: Sequence[int] | None = None,
                 factor: int = 1):
        self.x = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))
        self.labels, self.ids, self.factor = labels, ids, int(factor)

    def __len__(self) -> int:
        return len(self.x) * (self.factor if self.labels is not None else 1)

    def __getitem__(self, i: int) -> tuple:
        if self.labels is None:
            return self.x[i], i
        j = i // self.factor
        return self.x[j], torch.tensor(float(self.labels[j])), int(self.ids[j])


def _formats(samples: Sequence[Sample], where: str) -> list[tuple[str, int | None]]:
    missing = [s for s in samples if s.kind != "image" or not s.format]
    if missing:
        s = missing[0]
        why = f"a {s.kind} sample" if s.kind != "image" else "no source format recorded"
        raise ValueError(f"the format-only detector reads each image's source format; {len(missing)} {where} "
                         f"sample(s) have none (e.g. {s.split} id {s.id}, {s.path}: {why}). It runs on image "
                         "datasets, whose manifests record formats (`genshift data info` shows them)")
    return [(s.format, s.jpeg_quality) for s in samples]


def eval_format_pairs(manifest: Manifest, sample_ids: Sequence[int], profile: str) -> list[tuple[str, int | None]]:
    """(format, quality) of the file the evaluation decodes, for every eval position."""
    by_id = {s.id: s for s in manifest.split("eval")}
    samples = [by_id[int(i)] for i in sample_ids]
    return [evaluated_format(f, q, profile) for f, q in _formats(samples, "eval")]


def prepare_format_inputs(cfg: ConfigLike, bench, detector, say: Callable[[str], None]):
    """RunInputs of a format-only detector (module docstring)."""
    from protocols.window_inputs import RunInputs

    rc = run_config(cfg)
    m = bench.manifest
    profile = rc.degradation.spec
    pairs = eval_format_pairs(m, bench.plan.sample_ids, profile)
    eval_ds = FormatFeatures(format_features(pairs))
    train_by_id = {s.id: s for s in m.split("train")}
    factor = rc.train.augmentation_factor

    def make_train(ids: list[int], window: int = 0) -> Dataset:  # window: the same copies in every window
        samples = [train_by_id[int(i)] for i in ids]
        feats = format_features(_formats(samples, "training"))
        return FormatFeatures(feats, [s.label for s in samples], [s.id for s in samples], factor)

    tc = rc.to_dict()["train"] | {"precision": "32-true", "channels_last": False}  # one linear layer, in fp32
    seen = sorted({f"{f}" if q is None else f"{f}@{q}" for f, q in pairs})
    key = {"kind": "format features", "input_strategy": "format", "profile": profile, "manifest": m.checksum,
           "features": list(FEATURE_NAMES), "digest": m.checksum[:16], "cached": False}
    say(f"inputs ready: format features of {len(pairs)} eval images (evaluated as {', '.join(seen[:8])}"
        f"{' …' if len(seen) > 8 else ''}); no pixels are read")
    return RunInputs(eval_ds, make_train, tc, "32-true", key,
                     {"format_features": {"features": len(FEATURE_NAMES), "profile": profile}})
