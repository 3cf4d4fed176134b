"""Localization scoring of one window: per-pixel maps of the eval images that have a ground-truth mask.

For a detector with ``meta.has_localization``, every eval position whose sample has a mask (partial fakes) is
scored on the *clean* image: the mandatory chain's random crops would move the altered region (a recorded
protocol choice, ``inputs`` in the file). By default the fully convolutional detector sees the whole image and
is scored at the mask's resolution; ``full_image=False`` adapts image and mask to the detector input instead.
Maps are stored compactly per window in ``localization.npz``: P(altered) quantised to uint8 (x255, at most
1/510 off, so only pixels that close to the 0.5 threshold can flip) and masks bit-packed, both flattened
with a (M, 2) ``shapes`` array, plus eval positions and sample ids. ``localization_summary`` turns that file
(and the window's image AUROC) into the pixel metrics and the combined challenge score.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch

from benchmark.atomic import atomic_write_bytes
from benchmark.eval_plan import EvalPlan
from benchmark.images import adapt_to_input, load_rgb
from benchmark.manifest import Manifest
from benchmark.masks import adapt_mask_to_input, load_mask
from leaderboard.pixel_metrics import combined_localization_score, localization_metrics

FILE_NAME = "localization.npz"
SCHEMA_VERSION = 1


def masked_positions(manifest: Manifest, plan: EvalPlan) -> np.ndarray:
    """Eval positions (int64, ascending) whose sample has a ground-truth mask."""
    by_id = {s.id: s for s in manifest.split("eval")}
    return np.asarray([i for i, sid in enumerate(plan.sample_ids) if by_id[int(sid)].mask is not None], np.int64)


@torch.no_grad()
def score_maps(detector, manifest: Manifest, plan: EvalPlan, batch_size: int = 64,
               full_image: bool = True) -> dict[str, np.ndarray]:
    """Maps and masks of every masked eval position, as stored in localization.npz (see module docstring).

    ``full_image`` (default): the fully convolutional detector sees each whole clean image, one at a time,
    and is scored at the mask's native resolution (as IMDL benchmarks do; a central crop of a centred
    inpainting mask is often all-altered, which would make an all-ones map look perfect). Otherwise the image
    and mask are adapted to the detector input (``meta.eval_resize``) and scored in batches.
    """
    meta = detector.meta
    if not getattr(meta, "has_localization", False):
        raise ValueError(f"detector {meta.name} has no localization head (meta.has_localization is False)")
    strategy = meta.eval_resize
    if not full_image and strategy == "five_crop":
        raise ValueError(f"{meta.name}: localization needs a single-crop eval input, not five_crop")
    by_id = {s.id: s for s in manifest.split("eval")}
    positions = masked_positions(manifest, plan)
    device = next(detector.parameters()).device
    mean = torch.tensor(meta.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(meta.std, device=device).view(1, 3, 1, 1)
    size = meta.input_size
    step = 1 if full_image else batch_size
    maps, masks = [], []
    detector.eval()
    for start in range(0, len(positions), step):
        imgs = []
        for pos in positions[start: start + step]:
            s = by_id[int(plan.sample_ids[pos])]
            img = load_rgb(manifest.abspath(s.path))
            mask = load_mask(manifest.abspath(s.mask), (s.height, s.width))
            if not full_image:
                img, mask = adapt_to_input(img, size, strategy), adapt_mask_to_input(mask, size, strategy)
            imgs.append(img)
            masks.append(mask)
        x = (torch.from_numpy(np.stack(imgs)).to(device).permute(0, 3, 1, 2).float() / 255.0 - mean) / std
        _, map_logits = detector.forward_with_map(x)
        probs = torch.sigmoid(map_logits[:, 0].float()).cpu().numpy()
        maps.extend(np.rint(p * 255.0).astype(np.uint8) for p in probs)
    shapes = np.asarray([m.shape for m in masks], np.int64).reshape(-1, 2)
    return {
        "positions": positions,
        "sample_ids": plan.sample_ids[positions].astype(np.int64),
        "shapes": shapes,  # (M, 2) height, width of each map
        "maps_u8": np.concatenate([m.ravel() for m in maps]) if maps else np.zeros(0, np.uint8),
        "masks_packed": np.packbits(np.concatenate([m.ravel() for m in masks])) if masks else np.zeros(0, np.uint8),
        "inputs": np.str_("clean_full_image" if full_image else f"clean_{strategy}_{size}"),
        "schema_version": np.int64(SCHEMA_VERSION),
    }


def write_localization(window_dir: Path, arrays: dict[str, np.ndarray]) -> Path:
    """Write ``window_dir/localization.npz`` atomically (compressed, no pickles)."""
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    path = Path(window_dir) / FILE_NAME
    atomic_write_bytes(path, buf.getvalue())
    return path


def read_localization(path: Path) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(masks: bool (H, W) per image, maps: float64 P(altered) (H, W) per image) from a localization.npz."""
    with np.load(path, allow_pickle=False) as d:
        missing = {"maps_u8", "masks_packed", "shapes"} - set(d.files)
        if missing:
            raise ValueError(f"{path} lacks {sorted(missing)}; not a genshift localization file")
        shapes, flat_maps, packed = d["shapes"], d["maps_u8"], d["masks_packed"]
    total = int(np.prod(shapes, axis=1).sum()) if len(shapes) else 0
    if flat_maps.size != total or packed.size != (total + 7) // 8:
        raise ValueError(f"{path}: {flat_maps.size} map values / {packed.size} mask bytes do not match the "
                         f"{total} pixels of its {len(shapes)} shapes; the file is damaged")
    flat_masks = np.unpackbits(packed, count=total).astype(bool)
    ends = np.cumsum(np.prod(shapes, axis=1)) if len(shapes) else np.zeros(0, np.int64)
    starts = ends - np.prod(shapes, axis=1) if len(shapes) else ends
    masks = [flat_masks[a:b].reshape(h, w) for a, b, (h, w) in zip(starts, ends, shapes, strict=True)]
    maps = [flat_maps[a:b].reshape(h, w).astype(np.float64) / 255.0 for a, b, (h, w) in zip(starts, ends, shapes,
                                                                                             strict=True)]
    return masks, maps


def localization_summary(path: Path, image_auroc: float, mode: str = "per_image") -> dict:
    """Pixel metrics of a window's localization.npz plus ``combined`` = (image AUROC + F1 + IoU) / 3."""
    masks, maps = read_localization(path)
    out = localization_metrics(masks, maps, mode=mode)
    out["image_auroc"] = float(image_auroc)
    out["combined"] = combined_localization_score(image_auroc, out["pixel_f1"], out["pixel_iou"])
    return out
