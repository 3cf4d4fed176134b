"""Detector contract: a backbone producing (N, feature_dim) features plus a linear head giving one logit per image.

``probe`` freezes the backbone (no grad, always eval mode, excluded from trainable_state_dict); ``tune`` trains
everything. Metadata (input size, the backbone's own normalisation, sizes) travels with the module.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass

import torch
from torch import nn

from .builtins import MODES
from .weights import check_keys, load_strict

# Eval input strategies a detector may declare as its own (same names as benchmark.images.EVAL_INPUT_STRATEGIES).
EVAL_RESIZES = ("center_crop", "resize_center_crop", "resize", "five_crop")
# What a detector's forward takes: images (N, 3, S, S), landmark segments (N, 2L-1, 136) packed as
# SequenceDetector describes, or a sample's source-format features (N, F) (detectors.format_only: the format and
# JPEG quality of the file, served by the harness from the manifest). Only images have an image resize: the
# others' eval_resize is "none".
INPUT_KINDS = ("image", "landmarks", "format")


@dataclass
class DetectorMeta:
    """Static description of a detector, saved next to runs and used by the harness for preprocessing."""

    name: str
    family: str
    backbone: str
    mode: str
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    feature_dim: int
    n_params: int
    n_trainable: int
    flops: int | None
    pretrained: str
    eval_resize: str
    # True when the detector also returns a per-pixel map (forward_with_map); absent in older metadata = False.
    has_localization: bool = False
    # "l2": backbone features are L2-normalised before the head (AI-GenBench's open_clip models); else "none".
    feature_norm: str = "none"
    # "image" or "landmarks" (a SequenceDetector; input_size is then its segment length in frames).
    input_kind: str = "image"

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"DetectorMeta.mode must be one of {MODES}, got {self.mode!r}")
        if self.input_kind not in INPUT_KINDS:
            raise ValueError(f"DetectorMeta.input_kind must be one of {INPUT_KINDS}, got {self.input_kind!r}")
        allowed = EVAL_RESIZES if self.input_kind == "image" else ("none",)
        if self.eval_resize not in allowed:
            raise ValueError(f"DetectorMeta.eval_resize must be one of {allowed} for {self.input_kind} inputs, "
                             f"got {self.eval_resize!r}")
        self.mean = tuple(float(v) for v in self.mean)  # type: ignore[assignment]
        self.std = tuple(float(v) for v in self.std)  # type: ignore[assignment]
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ValueError(f"mean/std must have 3 values, got {self.mean} / {self.std}")

    def to_dict(self) -> dict:
        """Plain JSON-serialisable dict (tuples become lists)."""
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d


class Detector(nn.Module):
    """Backbone + linear head -> (N,) logits; see module docstring for the probe/tune contract."""

    def __init__(
        self,
        backbone: nn.Module,
        *,
        name: str,
        family: str,
        backbone_name: str,
        mode: str,
        input_size: int,
        mean: tuple[float, float, float],
        std: tuple[float, float, float],
        feature_dim: int,
        pretrained: str,
        eval_resize: str,
    ) -> None:
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r} (detector {name})")
        self.backbone = backbone
        self.head = nn.Linear(feature_dim, 1)
        self.mode = mode
        if mode == "probe":
            self.backbone.requires_grad_(False)
            self.backbone.eval()
        n_params = sum(p.numel() for p in self.parameters())
        n_trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        self.meta = DetectorMeta(
            name=name, family=family, backbone=backbone_name, mode=mode, input_size=int(input_size),
            mean=mean, std=std, feature_dim=int(feature_dim), n_params=n_params, n_trainable=n_trainable,
            flops=None, pretrained=pretrained, eval_resize=eval_resize,
        )

    @property
    def is_probe(self) -> bool:
        return self.mode == "probe"

    def train(self, mode: bool = True) -> Detector:
        """Switch train/eval; a probe's backbone stays in eval mode (frozen BN statistics, no dropout)."""
        super().train(mode)
        if self.is_probe:
            self.backbone.eval()
        return self

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Backbone features (N, feature_dim); computed without autograd for probes."""
        if self.is_probe:
            with torch.no_grad():
                feats = self.backbone(x)
        else:
            feats = self.backbone(x)
        feats = feats.flatten(1)
        if self.meta.feature_norm == "l2":  # encode_image(x, normalize=True), as the reference's open_clip models
            feats = torch.nn.functional.normalize(feats, dim=-1)
        if feats.shape[1] != self.meta.feature_dim:
            raise RuntimeError(
                f"{self.meta.name}: backbone produced {feats.shape[1]} features, meta says {self.meta.feature_dim}"
            )
        return feats

    def head_forward(self, feats: torch.Tensor) -> torch.Tensor:
        """Linear head on features -> (N,) logits, always in fp32 (also under bf16 autocast).

        Scores are fp32 even when the backbone ran in bf16: a bf16 logit has 8 significant bits, which
        would tie many images and blur ranking metrics.
        """
        if not torch.amp.is_autocast_available(feats.device.type):  # e.g. the meta device of `detectors list`
            return self.head(feats.float()).squeeze(1)
        with torch.autocast(feats.device.type, enabled=False):
            return self.head(feats.float()).squeeze(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: float (N, 3, S, S), already normalised with meta.mean/std -> (N,) logits (P(fake) = sigmoid)."""
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"{self.meta.name}: expected input (N, 3, S, S), got {tuple(x.shape)}")
        return self.head_forward(self.features(x))

    def forward_with_map(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits (N,), per-pixel logit maps (N, 1, S, S)) for detectors with meta.has_localization.

        Optional part of the contract: detectors without a localization head raise NotImplementedError.
        """
        raise NotImplementedError(
            f"{self.meta.name} has no localization head (meta.has_localization is False); "
            "use a detector with a per-pixel map, e.g. smallseg_tune"
        )

    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters the optimiser should see (the head only for probes)."""
        return (p for p in self.parameters() if p.requires_grad)

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """What a checkpoint must hold: head keys only for probes ('head.*'), everything for tune."""
        if self.is_probe:
            return {f"head.{k}": v for k, v in self.head.state_dict().items()}
        return dict(self.state_dict())

    def load_trainable_state_dict(self, state_dict: Mapping[str, torch.Tensor]) -> None:
        """Strict inverse of trainable_state_dict; missing/unexpected/misshaped keys are listed in the error."""
        if self.is_probe:
            check_keys(self.trainable_state_dict(), state_dict, f"trainable state for probe {self.meta.name}",
                       "the probe's head (a probe checkpoint holds only 'head.*' keys)")
            self.head.load_state_dict({k[len("head."):]: v for k, v in state_dict.items()}, strict=True)
        else:
            load_strict(self, state_dict, f"trainable state of {self.meta.name}")

    def extra_repr(self) -> str:
        return f"name={self.meta.name}, mode={self.mode}, input_size={self.meta.input_size}"


def count_flops(detector: Detector, input_size: int | None = None) -> int:
    """Forward FLOPs for one image at ``input_size`` (default meta.input_size), via FlopCounterMode.

    For detectors with a localization head the count covers ``forward_with_map`` (image logit and map).
    Attention runs in its math form, so that it is counted on every device (the fused CPU kernel is invisible to
    the counter, which would make CPU counts lower than meta or CUDA ones).

    For a SequenceDetector, ``input_size`` is the segment length in frames and the count is for one segment.

    Stores the result in ``detector.meta.flops``. Runs one real forward, so it can be slow for big models.
    """
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    size = int(input_size or detector.meta.input_size)
    param = next(detector.parameters())
    if detector.meta.input_kind != "image":  # one segment of `size` frames, or one row of format features
        x = detector.example_input(1, size).to(dtype=param.dtype, device=param.device)
    else:
        x = torch.zeros(1, 3, size, size, dtype=param.dtype, device=param.device)
    was_training = detector.training
    detector.eval()
    try:
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), sdpa_kernel([SDPBackend.MATH]), counter:
            if detector.meta.has_localization:  # the decoder is part of what such a detector costs
                detector.forward_with_map(x)
            else:
                detector(x)
    finally:
        detector.train(was_training)
    flops = int(counter.get_total_flops())
    if input_size is None or size == detector.meta.input_size:
        detector.meta.flops = flops
    return flops


class SequenceDetector(Detector):
    """A detector whose samples are landmark sequences cut into fixed-length segments (the video track).

    ``forward`` takes float32 (N, 2L-1, F) *packed segments*: rows 0..L-1 are the segment's L frames of F
    landmark values (68 (x, y) points = 136), rows L..2L-2 the L-1 frame-to-frame differences inside the segment
    (frame t+1 minus frame t), computed in float64 from the parsed text before the cast to float32, as LRNet
    does, so that a detector needing either input gets it bit-exact. It returns (N,) logits whose sigmoid is
    the segment's P(fake). There is no image normalisation (meta.mean/std are 0/1 and unused), no probe mode
    and no head/backbone split: the whole module is the trainable state.

    Subclasses build their layers after calling ``SequenceDetector.__init__`` and must call ``finish_meta()``
    at the end of their own ``__init__`` so that the parameter counts are right.
    """

    def __init__(self, *, name: str, family: str, backbone_name: str, segment_length: int, feature_size: int,
                 pretrained: str) -> None:
        nn.Module.__init__(self)  # no backbone + linear head: Detector.__init__ does not apply
        self.mode = "tune"
        self.segment_length = int(segment_length)
        self.feature_size = int(feature_size)
        self.meta = DetectorMeta(
            name=name, family=family, backbone=backbone_name, mode="tune", input_size=self.segment_length,
            mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), feature_dim=self.feature_size, n_params=0, n_trainable=0,
            flops=None, pretrained=pretrained, eval_resize="none", input_kind="landmarks",
        )

    def finish_meta(self) -> None:
        """Record the parameter counts once the layers exist."""
        self.meta.n_params = sum(p.numel() for p in self.parameters())
        self.meta.n_trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)

    def example_input(self, n: int = 1, length: int | None = None) -> torch.Tensor:
        """Zeros shaped like n packed segments of ``length`` frames (default: the detector's segment length)."""
        length = int(length or self.segment_length)
        return torch.zeros(n, 2 * length - 1, self.feature_size)

    def split_packed(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(positions (N, L, F), differences (N, L-1, F)) of packed segments; checks the layout."""
        if x.ndim != 3 or x.shape[2] != self.feature_size or x.shape[1] % 2 != 1:
            raise ValueError(f"{self.meta.name}: expected packed segments (N, 2L-1, {self.feature_size}), "
                             f"got {tuple(x.shape)}")
        length = (x.shape[1] + 1) // 2
        return x[:, :length], x[:, length:]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(f"{self.meta.name} is a sequence detector; it has no backbone features")

    def head_forward(self, feats: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(f"{self.meta.name} is a sequence detector; it has no separate head "
                                  "(probe feature caches do not apply)")

    def extra_repr(self) -> str:
        return f"name={self.meta.name}, segment_length={self.segment_length}"
