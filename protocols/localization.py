"""Localization scoring of one window: per-pixel maps of the eval images that have a ground-truth mask.

For a detector with ``meta.has_localization``, every eval position whose sample has a mask (partial fakes) is
scored on the *clean* image: the mandatory chain's random crops would move the altered region (a recorded
protocol choice, ``inputs`` in the file). By default the fully convolutional detector sees the whole image and
is scored at the mask's resolution; ``full_image=False`` adapts image and mask to the detector input instead.
Maps are stored compactly per window in ``localization.npz``: P(altered) quantised to uint8 (x255, at most
1/510 off, so only pixels that close to the 0.5 threshold can flip) and masks bit-packed, both flattened
with a (M, 2) ``shapes`` array, plus eval positions and sample ids. ``window_localization`` turns that file
(and the window's image AUROC) into the pixel metrics, the challenge scores and the all-ones /
all-zeros baselines; it and the reader live in ``leaderboard.localization_view`` (numpy only) and are
re-exported here. ``score_window_localization`` scores a window; the engine attaches it as the window hook
`WindowLocalization` (protocols/window_hooks.py) for detectors with a localization head.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import torch

from benchmark.eval_plan import EvalPlan
from benchmark.images import adapt_to_input
from benchmark.imagestore import read_image
from benchmark.manifest import Manifest
from benchmark.masks import adapt_mask_to_input, load_mask
from common import localization_file
from common.atomic import atomic_write_bytes
from leaderboard.localization_view import FILE_NAME, read_localization, window_localization
from protocols.window_hooks import WindowHook, WindowState

SCHEMA_VERSION = localization_file.SCHEMA_VERSION
__all__ = ["FILE_NAME", "SCHEMA_VERSION", "WindowLocalization", "localization_line", "masked_positions",
           "read_localization", "score_maps",
           "score_window_localization", "window_localization", "write_localization", "write_map_pngs"]


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
            img = read_image(manifest.root, s.path)  # any source kind: a file or a dataset row
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
    }


def write_localization(window_dir: Path, arrays: dict[str, np.ndarray]) -> Path:
    """Write ``window_dir/localization.npz`` atomically (compressed, no pickles)."""
    return localization_file.write(window_dir, arrays)


def validation_pixel_threshold(detector, manifest: Manifest, samples: list, rule: str) -> dict:
    """The pixel threshold `rule` (eval.threshold: eer, fpr:<x>, youden, a number) chooses on the maps of the
    validation rows that have a mask, pooled over their pixels (maps quantised like the stored ones). Returns
    {"value", "rule", "source" (validation | fixed | none), "reason"?, "n_images"}."""
    from benchmark.eval_plan import EvalPlan
    from leaderboard.metrics import parse_threshold_rule, threshold_by_rule_from_counts
    from protocols.scoring_sets import as_eval_manifest

    if parse_threshold_rule(rule)[0] == "fixed":
        return {"value": float(parse_threshold_rule(rule)[1]), "rule": rule, "source": "fixed", "n_images": 0}
    masked = [s for s in samples if s.mask is not None]
    if not masked:
        return {"value": float("nan"), "rule": rule, "source": "none", "n_images": 0,
                "reason": "no validation image has a ground-truth mask"}
    dm = as_eval_manifest(manifest, masked, "validation-maps")
    ids = np.asarray([s.id for s in masked], np.int64)
    plan = EvalPlan(ids, np.asarray([s.label for s in masked], np.int64), np.zeros(len(ids), np.int64),
                    np.full(len(ids), -1, np.int64))
    was = detector.training
    arrays = score_maps(detector, dm, plan)
    detector.train(was)
    sizes = arrays["shapes"].prod(axis=1)
    bits = np.unpackbits(arrays["masks_packed"])[: int(sizes.sum())].astype(bool)
    maps = arrays["maps_u8"]
    pos = np.bincount(maps[bits], minlength=256)
    neg = np.bincount(maps[~bits], minlength=256)
    value = threshold_by_rule_from_counts(np.arange(256) / 255.0, pos, neg, rule)
    out = {"value": float(value), "rule": rule, "source": "validation" if value == value else "none",
           "n_images": len(masked)}
    if value != value:
        out["reason"] = "the validation masks hold a single class of pixel"
    return out


def score_window_localization(detector, manifest: Manifest, plan: EvalPlan, window_dir: Path,
                              image_auroc: float, pixel_threshold: dict | None = None) -> dict | None:
    """Score a localization detector's maps after a window: write ``localization.npz``, return its summary.

    Returns None (nothing written) for a detector without ``meta.has_localization``, and {"skipped": reason}
    (nothing written, a warning printed) when no eval image has a mask. The engine calls this before it writes
    metrics.json and the ``done`` marker, so a window interrupted in between is scored again on resume; the
    file itself is written atomically. ``image_auroc`` is the window's AUROC on the whole eval split (group
    ``all``), the image part of the combined scores.
    """
    if not getattr(detector.meta, "has_localization", False):
        return None
    if not len(masked_positions(manifest, plan)):
        reason = (f"no eval image of {manifest.name} has a ground-truth mask, so the maps of {detector.meta.name} "
                  "cannot be scored (give partial fakes a mask: the `mask` column of a CSV dataset)")
        warnings.warn(f"localization: {reason}", stacklevel=2)
        return {"skipped": reason}
    was_training = detector.training
    arrays = score_maps(detector, manifest, plan)
    if pixel_threshold is not None:  # chosen on the validation split's maps (validation_pixel_threshold)
        arrays |= {"pixel_threshold": np.float64(pixel_threshold["value"]),
                   "pixel_threshold_rule": np.str_(pixel_threshold["rule"]),
                   "pixel_threshold_source": np.str_(pixel_threshold["source"])}
    path = write_localization(window_dir, arrays)
    detector.train(was_training)
    return window_localization(path, image_auroc)


class WindowLocalization(WindowHook):
    """The window hook of a map detector: after window k is scored, its maps go to window_<k>/localization.npz
    (before metrics.json and `done`, so a window interrupted in between is scored again on resume) and their
    summary to metrics.json's `localization` entry. The pixel threshold is chosen on window k's validation maps
    (`eval.threshold`'s rule) when the run has a validation split."""

    def __init__(self, manifest: Manifest, plan: EvalPlan, validation, threshold_rule: str):
        self.manifest, self.plan, self.validation, self.rule = manifest, plan, validation, threshold_rule

    def after_scoring(self, w: WindowState) -> dict:
        loc = score_window_localization(w.detector, self.manifest, self.plan, w.wdir, w.summary["auroc"]["all"],
                                        pixel_threshold=self.pixel_threshold(w.detector, w.k))
        if loc is None:
            return {}
        w.say(f"window {w.k + 1}/{w.n_windows} localization: {localization_line(loc)}")
        return {"localization": loc}

    def pixel_threshold(self, detector, k: int) -> dict | None:
        """The pixel threshold chosen on window k's validation maps (None without a validation split)."""
        if self.validation is None or not self.validation.present:
            return None
        samples = self.validation.window_set(k).samples
        return validation_pixel_threshold(detector, self.validation.bench.manifest, samples, self.rule)


def localization_line(summary: dict) -> str:
    """One line for the run log: pixel F1 / IoU / AUROC and the baselines' F1 (or why nothing was scored)."""
    if "skipped" in summary:
        return f"not scored: {summary['skipped']}"
    ones, zeros = summary["baselines"]["all_ones"], summary["baselines"]["all_zeros"]
    return (f"pixel F1 {summary['pixel_f1']:.3f} (all-ones {ones['pixel_f1']:.3f}, all-zeros {zeros['pixel_f1']:.3f}), "
            f"IoU {summary['pixel_iou']:.3f}, pixel AUROC {summary['pixel_auroc']:.3f}, Loupe score "
            f"{summary['loupe_score']:.3f} (per-image score {summary['per_image_score']:.3f}) on {summary['n_scored']} "
            f"masked images")


# ------------------------------------------------------------------ maps as PNG files (genshift predict)

MASKS_DIR = "masks"  # binary masks, 0 / 255 (as Loupe's pred_outputs/masks)
MAPS_DIR = "maps"  # P(altered) x 255, rounded


def map_png_name(rel_path: str) -> str:
    """The PNG name of a row's map: its path inside the dataset, extension replaced by .png (folders kept)."""
    p = Path(rel_path)
    parts = [part for part in p.with_suffix(".png").parts if part not in ("", ".", "..", "/")]
    return "/".join(parts) if parts else "image.png"


@torch.no_grad()
def write_map_pngs(detector, root: Path | str, image_paths: list[str], names: list[str], out_dir: Path,
                   threshold: float = 0.5) -> list[str]:
    """For each image: OUT/masks/<name> (altered iff P(altered) > threshold, 0/255) and OUT/maps/<name> (P × 255),
    both at the image's own resolution (the whole clean image through the fully convolutional detector, as the
    localization scores are made). `image_paths` are manifest paths under `root` (files or dataset rows, read
    through the image store). Returns the problems (an unreadable image is listed, never a crash)."""
    from PIL import Image

    meta = detector.meta
    if not getattr(meta, "has_localization", False):
        raise ValueError(f"detector {meta.name} has no localization head")
    device = next(detector.parameters()).device
    mean = torch.tensor(meta.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(meta.std, device=device).view(1, 3, 1, 1)
    was = {m: m.training for m in detector.modules()}
    detector.eval()
    problems = []
    try:
        for path, name in zip(image_paths, names, strict=True):
            try:
                img = read_image(root, path)
            except Exception as e:  # noqa: BLE001 - reported per image, as predict does
                problems.append(f"{path}: {e}")
                continue
            x = (torch.from_numpy(img).to(device).permute(2, 0, 1)[None].float() / 255.0 - mean) / std
            _, map_logits = detector.forward_with_map(x)
            prob = torch.sigmoid(map_logits[0, 0].float()).cpu().numpy()
            for sub, arr in ((MASKS_DIR, np.where(prob > threshold, 255, 0)), (MAPS_DIR, np.rint(prob * 255.0))):
                target = Path(out_dir) / sub / name
                target.parent.mkdir(parents=True, exist_ok=True)
                buf = io.BytesIO()
                Image.fromarray(arr.astype(np.uint8)).save(buf, format="PNG")  # 2-D uint8: mode L
                atomic_write_bytes(target, buf.getvalue())
    finally:
        for m, training in was.items():
            m.training = training
    return problems
