"""Segmentation detectors: a zoo backbone's feature pyramid plus a light FPN-style decoder.

Besides the image logit of the Detector contract they return a per-pixel logit map at input resolution
(``forward_with_map``), for the localization track (partial fakes with ground-truth masks). Names:
``smallseg_<probe|tune>`` (SmallCNN stages, the CPU default) and ``timmseg:<convnet>_<probe|tune>`` (any timm
model that supports ``features_only``). Training uses both losses (``localization_loss``): BCE on the image
logit and BCE on the pixels of images whose mask is known.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from .base import Detector
from .registry import split_mode
from .smallcnn import MEAN, STD, SmallCNN, no_hub_source, seeded_init
from .weights import check_keys, load_file_into, parse_source

DECODER_WIDTH = 32
SEG_INPUT_SIZE = 64  # smallseg's input; its decoder upsamples to it
TIMMSEG_PREFIX = "timmseg:"


class SmallCNNPyramid(SmallCNN):
    """SmallCNN exposing its four stages (1, 1/2, 1/4, 1/8 resolution); forward() is SmallCNN's pooling.

    The "pooled" layout: two full-resolution convolutions give the decoder's finest map more depth.
    """

    def __init__(self, widths: tuple[int, int, int, int] = (16, 32, 64, 96)) -> None:
        super().__init__(widths, layout="pooled")
        self.pyramid_channels = list(widths)

    def pyramid(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Feature maps fine to coarse."""
        f0 = self.stem(x)
        f1 = self.stage1(f0)
        f2 = self.stage2(f1)
        return [f0, f1, f2, self.stage3(f2)]

    @staticmethod
    def pool(coarsest: torch.Tensor) -> torch.Tensor:
        """Global average + max pooling of the coarsest map -> (N, 2C), as SmallCNN.forward."""
        return torch.cat([coarsest.mean(dim=(2, 3)), coarsest.amax(dim=(2, 3))], dim=1)


class TimmPyramid(nn.Module):
    """A timm ``features_only`` model; forward() pools its coarsest map (average + max)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.pyramid_channels = list(model.feature_info.channels())
        self.feature_dim = 2 * self.pyramid_channels[-1]

    def pyramid(self, x: torch.Tensor) -> list[torch.Tensor]:
        return list(self.model(x))

    pool = staticmethod(SmallCNNPyramid.pool)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.pyramid(x)[-1])


class LightDecoder(nn.Module):
    """FPN-lite: 1x1 laterals to ``width`` channels, top-down upsample-and-add, one 3x3 conv, 1x1 to a logit."""

    def __init__(self, channels: list[int], width: int = DECODER_WIDTH) -> None:
        super().__init__()
        self.laterals = nn.ModuleList(nn.Conv2d(c, width, 1) for c in channels)
        self.smooth = nn.Sequential(nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
                                    nn.ReLU(inplace=True))
        self.out = nn.Conv2d(width, 1, 1)

    def forward(self, feats: list[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        """Pyramid (fine to coarse) -> logit map (N, 1, *size)."""
        y = self.laterals[-1](feats[-1])
        for lateral, f in zip(reversed(self.laterals[:-1]), reversed(feats[:-1]), strict=True):
            y = lateral(f) + F.interpolate(y, size=f.shape[-2:], mode="bilinear", align_corners=False)
        y = self.out(self.smooth(y))
        if tuple(y.shape[-2:]) != tuple(size):
            y = F.interpolate(y, size=size, mode="bilinear", align_corners=False)
        return y


class SegmentationDetector(Detector):
    """Detector with a pixel decoder; the image logit comes from the pooled coarsest features (as SmallCNN)."""

    def __init__(self, backbone: nn.Module, *, decoder_width: int = DECODER_WIDTH, **kwargs) -> None:
        super().__init__(backbone, **kwargs)
        self.decoder = LightDecoder(list(backbone.pyramid_channels), decoder_width)
        self.meta.n_params = sum(p.numel() for p in self.parameters())
        self.meta.n_trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        self.meta.has_localization = True

    def _pyramid(self, x: torch.Tensor) -> list[torch.Tensor]:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"{self.meta.name}: expected input (N, 3, S, S), got {tuple(x.shape)}")
        if self.is_probe:
            with torch.no_grad():
                return self.backbone.pyramid(x)
        return self.backbone.pyramid(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N,) image logits only (the decoder is not run)."""
        return self.head_forward(self.backbone.pool(self._pyramid(x)[-1]))

    def forward_with_map(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(image logits (N,), pixel logit maps (N, 1, S, S)); P(altered) = sigmoid of the map."""
        feats = self._pyramid(x)
        logits = self.head_forward(self.backbone.pool(feats[-1]))
        return logits, self.decoder(feats, tuple(x.shape[-2:]))

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """Probe: head and decoder keys (the frozen backbone is rebuilt from its source); tune: everything."""
        if not self.is_probe:
            return dict(self.state_dict())
        return {k: v for k, v in self.state_dict().items() if k.startswith(("head.", "decoder."))}

    def load_trainable_state_dict(self, state_dict: Mapping[str, torch.Tensor]) -> None:
        if not self.is_probe:
            super().load_trainable_state_dict(state_dict)
            return
        check_keys(self.trainable_state_dict(), state_dict, f"trainable state for probe {self.meta.name}",
                   "the probe's head and decoder ('head.*', 'decoder.*' keys)")
        self.load_state_dict({**self.state_dict(), **state_dict}, strict=True)


def localization_loss(
    logits: torch.Tensor,
    map_logits: torch.Tensor,
    labels: torch.Tensor,
    masks: torch.Tensor,
    mask_valid: torch.Tensor,
    pixel_weight: float = 1.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """BCE(image logits, labels) + pixel_weight · class-balanced BCE(map logits, masks) over ``mask_valid``.

    The pixel term is the mean of the BCE over altered pixels and the BCE over clean pixels (each averaged
    over the valid images of the batch), so that altered pixels, rare in a batch of mostly reals and fully
    generated fakes, still pull the map above 0.5 where the image was altered.

    masks: float (N, 1, S, S) in {0, 1}, aligned with the input crop; mask_valid: bool (N,), True where the
    mask is known (reals: all zeros; partial fakes: their mask). A batch with no valid mask has no pixel term.
    Returns (total loss, {"image": ..., "pixel": ...} as floats for logging).
    """
    if map_logits.shape != masks.shape:
        raise ValueError(f"map logits {tuple(map_logits.shape)} and masks {tuple(masks.shape)} differ in shape")
    if mask_valid.shape != logits.shape:
        raise ValueError(f"mask_valid must be (N,) like the logits {tuple(logits.shape)}, got {tuple(mask_valid.shape)}")
    image = F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))
    valid = mask_valid.to(torch.bool)
    pixel = map_logits.sum() * 0.0  # no valid pixel of a class: no term (graph and DDP parameter set unchanged)
    if valid.any():
        target = masks[valid].to(map_logits.dtype)
        per_pixel = F.binary_cross_entropy_with_logits(map_logits[valid], target, reduction="none")
        altered = target > 0.5
        parts = [per_pixel[sel].mean() for sel in (altered, ~altered) if sel.any()]
        pixel = pixel + sum(parts) / len(parts)
    total = image + pixel_weight * pixel
    return total, {"image": float(image.detach()), "pixel": float(pixel.detach())}


def make_smallseg(name: str, pretrained: str = "default", seed: int = 0, **kwargs) -> Detector:
    """Factory for smallseg_<mode>: SmallCNN stages + LightDecoder, random init (seeded), 64 px input.

    A local file is loaded strictly into the backbone (a SmallCNN backbone file fits). ``widths`` and
    ``decoder_width`` may be passed through kwargs.
    """
    _, mode = split_mode(name)
    source = no_hub_source(name, pretrained)
    widths = tuple(kwargs.pop("widths", (16, 32, 64, 96)))
    decoder_width = int(kwargs.pop("decoder_width", DECODER_WIDTH))
    if kwargs:
        raise TypeError(f"{name}: unexpected arguments {sorted(kwargs)}")
    with seeded_init(seed):
        backbone = SmallCNNPyramid(widths)  # type: ignore[arg-type]
        det = SegmentationDetector(
            backbone, decoder_width=decoder_width, name=name, family="smallseg", backbone_name="smallcnn",
            mode=mode, input_size=SEG_INPUT_SIZE, mean=MEAN, std=STD, feature_dim=backbone.feature_dim,
            pretrained=source.describe(), eval_resize="center_crop",
        )
    if source.kind == "file":
        load_file_into(backbone, source.value, key_map=None)
    return det


def check_timmseg_name(name: str) -> None:
    """Library check of a ``timmseg:<model>_<mode>`` name (imports timm, builds nothing)."""
    from .timm_models import check_timm_model

    check_timm_model(name, split_mode(name)[0][len(TIMMSEG_PREFIX):], prefix=TIMMSEG_PREFIX)


def make_timmseg(name: str, pretrained: str = "none", seed: int = 0, **kwargs) -> Detector:
    """Factory for timmseg:<arch>_<mode>: a timm ``features_only`` convnet + LightDecoder.

    Only 'none' (seeded random init) is supported so far; any other source is refused with a hint, so
    nothing is downloaded behind the user's back. Input size and mean/std come from timm's cfg.
    """
    import timm

    base, mode = split_mode(name)
    arch = base[len(TIMMSEG_PREFIX):]
    check_timmseg_name(name)
    if str(pretrained).strip().lower() not in ("default", "none"):
        raise ValueError(f"{name}: timmseg backbones are randomly initialised only (pretrained 'none'/'default'); "
                         f"got pretrained={pretrained!r}. Loading pretrained timm weights into a features_only "
                         "model is not implemented yet; use smallseg_<mode> or timm:<arch>_<mode> for detection.")
    source = parse_source("none")
    decoder_width = int(kwargs.pop("decoder_width", DECODER_WIDTH))
    if kwargs:
        raise TypeError(f"{name}: unexpected arguments {sorted(kwargs)}")
    with seeded_init(seed):
        model = timm.create_model(arch, pretrained=False, features_only=True)
        cfg = model.pretrained_cfg
        backbone = TimmPyramid(model)
        det = SegmentationDetector(
            backbone, decoder_width=decoder_width, name=name, family="timmseg", backbone_name=arch, mode=mode,
            input_size=int(cfg.get("input_size", (3, 224, 224))[-1]), mean=tuple(cfg.get("mean")),
            std=tuple(cfg.get("std")), feature_dim=backbone.feature_dim, pretrained=source.describe(),
            eval_resize="resize_center_crop",
        )
    return det
