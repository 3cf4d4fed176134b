"""SmallCNN: the default CPU detector for the embedded benchmark (56 px, no pretrained weights).

The first convolution runs at full resolution with no stride so that pixel-level generator traces
(upsampling checkerboards, spectral peaks, JPEG-like blockiness) reach a learned filter before anything is
discarded; the first downsampling is a learned stride-2 convolution (it reads every full-resolution value,
where max-pooling would keep one in four). Global average + max pooling keeps diffuse and sparse evidence.

`layout="strided"` (smallcnn) trains ~1.3-1.5× faster on a 2-core CPU than `layout="pooled"` at equal input size
(two full-resolution convolutions, then max-pooling: the earlier smallcnn, still smallseg's backbone, whose
decoder reads the full-resolution map) and scores a higher NEXT on the embedded benchmark (docs/performance.md)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from .base import Detector
from .registry import split_mode
from .weights import load_file_into, parse_source

INPUT_SIZE = 56  # smallcnn; smallseg keeps 64 (segmentation.SEG_INPUT_SIZE)
# Plain [0, 1] -> roughly zero-centred inputs; there are no pretrained statistics to inherit.
MEAN = (0.5, 0.5, 0.5)
STD = (0.25, 0.25, 0.25)


def _conv_bn(cin: int, cout: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True)]


LAYOUTS = ("strided", "pooled")


class SmallCNN(nn.Module):
    """Compact CNN, stages at 1, 1/2, 1/4, 1/8 resolution; output (N, 2 * widths[-1]).

    ``layout``: "strided" = one full-resolution 3x3 conv, then a stride-2 3x3 conv; "pooled" = two
    full-resolution 3x3 convs, then max-pool + 3x3 conv. Stages 2 and 3 (max-pool + conv) are shared.
    """

    def __init__(self, widths: tuple[int, int, int, int] = (16, 32, 64, 96), layout: str = "strided") -> None:
        super().__init__()
        w0, w1, w2, w3 = widths
        if layout == "strided":
            self.stem = nn.Sequential(*_conv_bn(3, w0))  # full resolution
            self.stage1 = nn.Sequential(*_conv_bn(w0, w1, stride=2))  # 1/2
        elif layout == "pooled":
            self.stem = nn.Sequential(*_conv_bn(3, w0), *_conv_bn(w0, w0))  # full resolution
            self.stage1 = nn.Sequential(nn.MaxPool2d(2), *_conv_bn(w0, w1))  # 1/2
        else:
            raise ValueError(f"SmallCNN: unknown layout {layout!r}; expected one of {LAYOUTS}")
        self.stage2 = nn.Sequential(nn.MaxPool2d(2), *_conv_bn(w1, w2))  # 1/4
        self.stage3 = nn.Sequential(nn.MaxPool2d(2), *_conv_bn(w2, w3))  # 1/8
        self.feature_dim = 2 * w3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stage3(self.stage2(self.stage1(self.stem(x))))
        return torch.cat([x.mean(dim=(2, 3)), x.amax(dim=(2, 3))], dim=1)


def no_hub_source(name: str, pretrained: str):
    """Weight source of a SmallCNN-based model: 'default' = seeded random init; a hub tag is refused."""
    source = parse_source("none" if pretrained == "default" else pretrained)
    if source.kind == "tag":
        raise ValueError(f"{name}: no hub weights exist for SmallCNN; got pretrained={pretrained!r}. "
                         "Use 'default'/'none' (random init) or a local weight file.")
    return source


@contextlib.contextmanager
def seeded_init(seed: int) -> Iterator[None]:
    """Seed torch for building initial weights, then restore the global RNG (callers' streams untouched)."""
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        yield
    finally:
        torch.random.set_rng_state(state)


def make_smallcnn(name: str, pretrained: str = "default", seed: int = 0, **kwargs) -> Detector:
    """Factory for smallcnn_<mode>. 'default' means random init (seeded): this model has no pretrained weights.

    A local file is loaded strictly into the backbone. ``widths`` may be passed through kwargs.
    """
    _, mode = split_mode(name)
    source = no_hub_source(name, pretrained)
    widths = tuple(kwargs.pop("widths", (16, 32, 64, 96)))
    if kwargs:
        raise TypeError(f"{name}: unexpected arguments {sorted(kwargs)}")
    with seeded_init(seed):
        backbone = SmallCNN(widths)  # type: ignore[arg-type]
        det = Detector(
            backbone, name=name, family="smallcnn", backbone_name="smallcnn", mode=mode, input_size=INPUT_SIZE,
            mean=MEAN, std=STD, feature_dim=backbone.feature_dim, pretrained=source.describe(),
            eval_resize="center_crop",
        )
    if source.kind == "file":
        load_file_into(backbone, source.value, key_map=None)
    return det
