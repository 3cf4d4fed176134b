"""format_only: a baseline detector that sees nothing of an image but its source format and JPEG quality.

Its input is one row of `benchmark.formats.format_features` per sample — a one-hot of the file's format (PNG,
WebP, other, JPEG of unknown quality, JPEG by quality bins of 5) — which the harness serves from the manifest
(protocols.format_inputs; under a `+reencode<Q>` eval profile the evaluated file is JPEG at Q for every image).
A linear layer on that one-hot is a lookup table: one learned score per format and quality bin. Trained and
scored by the same windows, npz files and leaderboard as any detector, its AUROC measures how far a benchmark
can be solved by the container alone, with no pixel looked at (docs/formats.md).

The layer starts at zero: the untrained model scores every sample 0.5 (FWT's b_j = 0.5 exactly), and the first
gradient steps set the direction, whatever the learning rate.
"""

from __future__ import annotations

import torch
from torch import nn

from benchmark.formats import FEATURE_NAMES

from .base import Detector, DetectorMeta
from .weights import load_file_into, parse_source


class FormatOnlyDetector(Detector):
    """(N, F) format features -> (N,) logits through one zero-initialised linear layer (fp32, no autocast)."""

    def __init__(self, name: str, pretrained: str) -> None:
        nn.Module.__init__(self)  # no image backbone: Detector.__init__ does not apply
        self.mode = "tune"
        self.n_features = len(FEATURE_NAMES)
        self.head = nn.Linear(self.n_features, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        n = sum(p.numel() for p in self.parameters())
        self.meta = DetectorMeta(
            name=name, family="format", backbone="format-features", mode="tune", input_size=self.n_features,
            mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), feature_dim=self.n_features, n_params=n, n_trainable=n,
            flops=2 * self.n_features, pretrained=pretrained, eval_resize="none", input_kind="format",
        )

    def example_input(self, n: int = 1, length: int | None = None) -> torch.Tensor:
        """Zeros shaped like n rows of format features (for FLOP counting)."""
        return torch.zeros(n, self.n_features)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 2 or x.shape[1] != self.n_features:
            raise ValueError(f"{self.meta.name}: expected format features (N, {self.n_features}), got "
                             f"{tuple(x.shape)}; this detector reads no pixels")
        return x.float()

    def head_forward(self, feats: torch.Tensor) -> torch.Tensor:
        if not torch.amp.is_autocast_available(feats.device.type):
            return self.head(feats.float()).squeeze(1)
        with torch.autocast(feats.device.type, enabled=False):
            return self.head(feats.float()).squeeze(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head_forward(self.features(x))

    def extra_repr(self) -> str:
        return f"name={self.meta.name}, features={self.n_features}"


def make_format_only(name: str, pretrained: str = "default", **kwargs) -> Detector:
    """Factory for `format_only`: 'default'/'none' = zero init (there is nothing to pretrain); a local file (a
    state dict with head.weight and head.bias) is loaded strictly."""
    if kwargs:
        raise TypeError(f"{name}: unexpected arguments {sorted(kwargs)}")
    source = parse_source("none" if pretrained == "default" else pretrained)
    if source.kind == "tag":
        raise ValueError(f"{name}: no hub weights exist for the format-only baseline; got pretrained={pretrained!r}. "
                         "Use 'default'/'none' (zero init) or a local weight file.")
    det = FormatOnlyDetector(name, source.describe())
    if source.kind == "file":
        load_file_into(det, source.value, key_map=None)
    return det
