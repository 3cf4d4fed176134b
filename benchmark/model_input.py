"""The reference input pipeline: exactly the tensor AI-GenBench's evaluation hands its model.

After the mandatory chain (`benchmark.degradations.degrade_reference`, which leaves a PIL image or a float tensor,
as the reference does), the reference's model applies torchvision v2 ``Resize((S, S))`` (both sides squashed,
bilinear, antialiased), ``CenterCrop(S)`` or ``FiveCrop(S)`` (``multicrop``: one centre crop instead when a side is
<= S) to the image *in its own type*, then ``ToImage``, ``ToDtype(float32, scale=True)`` and ``Normalize`` with the
CLIP statistics. The same torchvision classes are used here, on the same types, so the result is the reference's
to the bit (checked against tensors made by the reference's own code, tests/data/model_input_golden.npz).

Two conversions to float meet here and differ in the last bit for 126 of the 256 byte values: a PIL crop becomes
``u8.float() * (1/255)`` (ToDtype), a crop of the chain's float tensor keeps the tensor's ``u8.float() / 255``
(torchvision's to_tensor). `encode_crop` stores a crop compactly and exactly (uint8 plus which conversion, or
float32 when the values are not k/255) and `decode_crops` restores the float tensor bit for bit; the eval cache
of the reference pipeline (`benchmark.reference_eval_cache`) holds crops in this form.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F2

from benchmark.degradations import DEFAULT_BASE_SEED, degrade_reference

REFERENCE_STRATEGIES = ("resize", "center_crop", "five_crop")
# The reference's names for them (BaseDeepfakeDetectionModel.evaluation_cropping_strategy).
REFERENCE_STRATEGY_NAMES = {"resize": "resize", "center_crop": "crop", "five_crop": "multicrop"}
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
NORMALIZATIONS: dict[str, tuple[tuple[float, ...], tuple[float, ...]] | None] = {
    "clip": (CLIP_MEAN, CLIP_STD), "imagenet": (IMAGENET_MEAN, IMAGENET_STD), "none": None}

# How a stored crop becomes the float tensor the reference normalises (encode_crop / decode_crops).
U8_TODTYPE = 0  # uint8 from a PIL crop: ToDtype(float32, scale=True) = u8.float().mul_(1/255)
U8_TOTENSOR = 1  # uint8 whose k/255 (to_tensor's u8.float().div(255)) is the tensor crop exactly
F32 = 2  # float32 as it is (a resize of the float tensor, or a crop of the floats a bilinear/bicubic RRC left)
CROP_KINDS = {U8_TODTYPE: "uint8 (ToDtype)", U8_TOTENSOR: "uint8 (to_tensor)", F32: "float32"}


def check_strategy(strategy: str) -> None:
    if strategy not in REFERENCE_STRATEGIES:
        raise ValueError(f"eval input {strategy!r} has no reference-pipeline form; the reference pipeline takes "
                         f"{', '.join(REFERENCE_STRATEGIES)} (the reference's resize, crop, multicrop)")


@functools.lru_cache(maxsize=8)
def _transforms(size: int) -> dict:
    """The reference model's transforms (BaseDeepfakeDetectionModel.__init__ with model_input_size=(S, S))."""
    return {"resize": v2.Resize((size, size)), "center_crop": v2.CenterCrop((size, size)),
            "five_crop": v2.FiveCrop((size, size)),
            "to_float": v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True)])}


def reference_crops(image: Image.Image | torch.Tensor, size: int, strategy: str) -> list[Image.Image | torch.Tensor]:
    """The reference's make_eval_crops on the chain's output, in its own type (PIL image or float tensor)."""
    check_strategy(strategy)
    t = _transforms(int(size))
    if strategy == "resize":
        return [t["resize"](image)]
    if strategy == "center_crop":
        return [t["center_crop"](image)]
    height, width = F2.get_size(image)
    if height <= size or width <= size:  # the reference falls back to one centre crop
        return [t["center_crop"](image)]
    return list(t["five_crop"](image))


def to_float(crop: Image.Image | torch.Tensor, size: int) -> torch.Tensor:
    """ToImage + ToDtype(float32, scale=True): a plain float32 3×S×S tensor (before Normalize)."""
    return _transforms(int(size))["to_float"](crop).as_subclass(torch.Tensor)


def normalize(x: torch.Tensor, norm: str | tuple | None) -> torch.Tensor:
    """torchvision v2 Normalize (``x.sub(mean).div_(std)`` in float32) with named or explicit statistics."""
    stats = NORMALIZATIONS[norm] if isinstance(norm, str) else norm
    if stats is None:
        return x
    mean, std = stats
    return F2.normalize(x, mean=list(mean), std=list(std))


def encode_crop(crop: Image.Image | torch.Tensor) -> tuple[int, np.ndarray]:
    """(kind, array): uint8 CHW with its conversion kind when that restores the crop exactly, else float32 CHW."""
    if isinstance(crop, Image.Image):
        return U8_TODTYPE, np.ascontiguousarray(np.asarray(crop.convert("RGB"), dtype=np.uint8).transpose(2, 0, 1))
    x = crop.detach().to("cpu", torch.float32).contiguous()
    k = torch.round(x * 255)
    if bool(((k >= 0) & (k <= 255)).all()):
        u8 = k.to(torch.uint8)
        if torch.equal(u8.to(torch.float32).div(255), x):
            return U8_TOTENSOR, u8.numpy()
    return F32, x.numpy()


def decode_crops(kinds: np.ndarray, u8: np.ndarray | None, f32: np.ndarray | None, rows: np.ndarray) -> torch.Tensor:
    """float32 (n, 3, S, S) from stored crops: crop j is u8[rows[j]] or f32[rows[j]] by kinds[j].

    A handful of whole-batch operations (small per-run copies are far slower on a busy CPU): one read and one
    conversion of the batch's uint8 rows with the reference's arithmetic (``u8.float() / 255``, to_tensor; the
    PIL crops' ``u8.float() * (1/255)``, ToDtype, redone for those rows only), the float rows taken as they are,
    and two row copies into the output when both kinds are present."""
    kinds, rows = np.asarray(kinds), np.asarray(rows)
    if u8 is not None and len(u8):
        shape = u8.shape[1:]
    elif f32 is not None and len(f32):
        shape = f32.shape[1:]
    else:
        raise ValueError("decode_crops: both stores are empty")
    is_f32 = kinds == F32
    sel_u8, sel_f32 = np.flatnonzero(~is_f32), np.flatnonzero(is_f32)
    block_u8 = block_f32 = None
    if sel_u8.size:
        raw = torch.from_numpy(_readable(u8[_as_index(rows[sel_u8])]))  # one read
        block_u8 = raw.to(torch.float32).div_(255)  # torchvision to_tensor
        scaled = np.flatnonzero(kinds[sel_u8] == U8_TODTYPE)
        if scaled.size:  # PIL crops: torchvision to_dtype_image (int -> float), recomputed for those rows only
            t = torch.from_numpy(scaled)
            block_u8.index_copy_(0, t, raw.index_select(0, t).to(torch.float32).mul_(1.0 / 255))
    if sel_f32.size:  # a view of the (copy-on-write) store where the rows are consecutive: copied once, below
        block_f32 = torch.from_numpy(_readable(np.asarray(f32[_as_index(rows[sel_f32])], dtype=np.float32)))
    if block_f32 is None:
        return block_u8
    if block_u8 is None:
        return block_f32.clone()  # never hand out a view of the store
    out = torch.empty((len(kinds), *shape), dtype=torch.float32)
    out.index_copy_(0, torch.from_numpy(sel_u8), block_u8)
    out.index_copy_(0, torch.from_numpy(sel_f32), block_f32)
    return out


def _as_index(rows: np.ndarray) -> slice | np.ndarray:
    """A slice when rows are consecutive (one contiguous read of a memory map, no copy), else the rows."""
    if rows.size and rows[-1] - rows[0] == rows.size - 1 and np.all(np.diff(rows) == 1):
        return slice(int(rows[0]), int(rows[-1]) + 1)
    return rows


def _readable(a: np.ndarray) -> np.ndarray:
    """`a` itself when torch can wrap it without a warning (writable), else a copy (read-only memory maps)."""
    return a if a.flags.writeable else np.array(a)


def encoded_model_input(image: np.ndarray, position: int, profile: str, base_seed: int, size: int,
                        strategy: str) -> list[tuple[int, np.ndarray]]:
    """The reference pipeline's crops of one decoded image at one eval position, each as encode_crop's pair."""
    out, _ = degrade_reference(image, position, profile, base_seed)
    return [encode_crop(c) for c in reference_crops(out, size, strategy)]


def reference_model_input(image: np.ndarray, position: int, profile: str = "aigenbench-v1",
                          base_seed: int = DEFAULT_BASE_SEED, size: int = 224, strategy: str = "resize",
                          norm: str | tuple | None = "clip") -> tuple[np.ndarray, list[dict]]:
    """(float32 [n_crops, 3, S, S], chain records): the reference's model input for a decoded uint8 RGB image."""
    out, records = degrade_reference(image, position, profile, base_seed)
    crops = [normalize(to_float(c, size), norm) for c in reference_crops(out, size, strategy)]
    return torch.stack(crops).numpy().astype(np.float32, copy=False), records


__all__ = ["REFERENCE_STRATEGIES", "NORMALIZATIONS", "CLIP_MEAN", "CLIP_STD", "reference_crops", "to_float",
           "normalize", "encode_crop", "decode_crops", "encoded_model_input", "reference_model_input"]
