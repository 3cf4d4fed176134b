"""`genshift predict`: score every row of a source with a detector and weights, or with a run's window checkpoint.

    genshift predict --detector lrnet --pretrained DIR --dataset landmarks:ROOT --out OUT
    genshift predict --checkpoint runs/<exp>/window_3 --dataset videos:ROOT --out OUT

No timeline, no balanced set and no training split are needed: method folders are labels only and every row
of every split is scored (`--split` picks one). A data-check problem is reported, never a refusal: a row that
cannot be scored (unreadable file, no segment under the profile) gets a NaN score and its reason in the CSV.
Writes `OUT/predictions.npz` and `OUT/predictions.csv` (one row per sample); see docs/video.md for the keys.

A map detector (a localization head, e.g. smallseg_tune or a run's window checkpoint of one) also writes its
localization maps of every image row, at the image's own resolution: `OUT/masks/<path>.png` (0/255, altered iff
P(altered) > --mask-threshold, as Loupe's pred_outputs/masks) and `OUT/maps/<path>.png` (P(altered) × 255). A
window checkpoint's default threshold is the pixel threshold its run chose on the validation maps (0.5 without).

Sequence detectors (lrnet*) score landmark segments (profile `--profile`, default the detector's own: lrnet-v1,
the vote); image detectors score images (their own resize/crop, no mandatory degradations) or frames sampled
from videos (`--frames-every K` / `--frames-count N`, fused by `--aggregate`, mean by default).
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
from pathlib import Path

import numpy as np

PREDICT_SCHEMA = 1


def register(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("predict", help="score every row of a source with a detector (or a run's checkpoint); "
                                       "writes OUT/predictions.npz and OUT/predictions.csv",
                       description=__doc__.split("\n\n")[2], formatter_class=argparse.RawDescriptionHelpFormatter)
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--detector", help="registered detector name, e.g. lrnet, lrnet_g1, smallcnn_tune")
    who.add_argument("--checkpoint", type=Path, help="a finished window of a run: runs/<exp>/window_<k>")
    p.add_argument("--pretrained", default="default",
                   help="with --detector: weights (a directory holding g1.pth/g2.pth for LRNet, a file, a hub tag)")
    p.add_argument("--dataset", required=True, help="landmarks:ROOT|FILE.csv, videos:ROOT|FILE.csv, folder:ROOT, "
                                                   "csv:FILE, synthetic-landmarks[:preset]")
    p.add_argument("--out", required=True, type=Path, help="output directory (created)")
    p.add_argument("--split", choices=("all", "train", "val", "eval"), default="all",
                   help="which split's rows to score (default all; LRNet's test split is genshift's eval)")
    p.add_argument("--profile", help="sequence profile: lrnet-v1 | fixed (default: the detector's own)")
    p.add_argument("--aggregate", choices=("vote", "mean", "max"),
                   help="video score from segments/frames (default: the profile's; mean for frames)")
    p.add_argument("--frames-every", type=int, help="videos: every k-th frame")
    p.add_argument("--frames-count", type=int, help="videos: N evenly spaced frames (default 8)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--mask-threshold", type=float, default=None,
                   help="map detectors: a pixel is altered in OUT/masks iff P(altered) > this (default: with "
                        "--checkpoint, the pixel threshold the run chose on that window's validation maps where it "
                        "has one, else 0.5)")
    p.add_argument("--no-maps", action="store_true", help="map detectors: do not write OUT/masks and OUT/maps")
    p.add_argument("--cache-dir", help="manifest and parsed-sequence cache (default $GENSHIFT_CACHE)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(handler=cmd_predict)
    return p


def _build_detector(args):
    from detectors import create_detector, load_detector_from_checkpoint
    from detectors.registry import check_name

    if args.checkpoint is not None:
        return load_detector_from_checkpoint(args.checkpoint), f"checkpoint {args.checkpoint}"
    check_name(args.detector)
    return create_detector(args.detector, pretrained=args.pretrained), args.pretrained


def _check(manifest, cache_dir: Path, profile, progress: bool) -> list:
    """Every data-check problem of the rows (reported, never refused)."""
    from benchmark.datacheck import check_source

    seq = {"segment_length": profile.segment_length, "profile": profile.name} if profile else {}
    return check_source(manifest, cache_dir, workers=1, progress=progress, **seq).problems


def cmd_predict(args) -> int:
    from benchmark.sources import resolve_cache_dir

    cache_dir = resolve_cache_dir(args.cache_dir)
    detector, weights = _build_detector(args)
    detector.eval()
    profile = None
    if getattr(detector.meta, "input_kind", "image") == "landmarks":
        from protocols.sequence_inputs import profile_for

        profile = profile_for(detector, args.profile, args.aggregate)
    m, rows, problems, reasons = _scan(args, cache_dir, profile)
    pipe = _run_pipeline(args, detector)
    items, fuse, item_keys, label = _items(args, detector, m, rows, profile, cache_dir, reasons, pipe)
    scores, fused_logits, extra = fuse(_item_logits(args, detector, items, pipe))
    gen_names = [""] + sorted({s.generator for s in rows if s.generator})
    gid = {g: i for i, g in enumerate(gen_names)}
    from protocols.sequence_inputs import video_arrays

    arrays = {
        "fused_scores": scores.astype(np.float32),
        "fused_logits": fused_logits.astype(np.float32),
        "fused_labels": np.array([s.label for s in rows], dtype=np.int64),
        "fused_generator_ids": np.array([gid[s.generator] for s in rows], dtype=np.int64),
        "fused_identifiers": np.array([s.id for s in rows], dtype=np.int64),
        "fused_splits": np.array([s.split for s in rows], dtype=str),
        "generator_id_to_name": np.array(gen_names, dtype=str),
        **video_arrays(rows, m.root),
        **extra,
        "kind": np.array("predict"),
        "predict_schema": np.int64(PREDICT_SCHEMA),
        "detector": np.array(detector.meta.name),
        "weights": np.array(str(weights)),
        "dataset": np.array(args.dataset),
        "manifest_checksum": np.array(m.checksum),
    }
    n_items = _count_items(extra, len(rows))
    _write(args.out, arrays, rows, scores, n_items, reasons, label)
    from leaderboard import video_view as VV

    if VV.is_video_file(arrays):  # the manipulation × compression grids and ROC curves per manipulation
        VV.write_views(arrays, args.out, title=f"{detector.meta.name} on {args.dataset}")
    if getattr(detector.meta, "has_localization", False) and not args.no_maps:
        _write_maps(args, detector, m, rows)
    bad = int(np.isnan(scores).sum())
    print(f"scored {len(rows)} rows ({len(items)} {item_keys}) with {detector.meta.name} ({weights}); "
          f"{bad} row(s) without a score (reasons in predictions.csv); wrote {args.out}/predictions.npz and "
          f"predictions.csv")
    if problems:
        print(f"genshift: the data check found {len(problems)} problem(s) (listed in predictions.csv and "
              f"`genshift data check {args.dataset}`)", file=sys.stderr)
    return 0


def _scan(args, cache_dir: Path, profile) -> tuple:
    """(manifest, the rows of the chosen split(s) in split and id order, the data check's problems, the reasons
    per (split, id) that a row gets no score)."""
    from benchmark.sources import scan_source

    scan = scan_source(args.dataset, cache_dir, progress=not args.no_progress, need_timeline=False)
    m = scan.manifest
    for note in scan.notes:
        print(f"genshift: {note}", file=sys.stderr)
    rows = sorted((s for s in m.samples if args.split == "all" or s.split == args.split),
                  key=lambda s: ({"train": 0, "val": 1, "eval": 2}[s.split], s.id))
    if not rows:
        raise FileNotFoundError(f"{args.dataset}: no sample in split {args.split!r}")
    problems = [p for p in scan.problems + _check(m, cache_dir, profile, not args.no_progress)
                if p.kind not in ("balance", "generator_split")]  # about training windows: not predict's business
    reasons: dict[tuple[str, int], list[str]] = {}
    for p in problems:
        if p.id is not None:
            reasons.setdefault((p.split, p.id), []).append(f"{p.kind}: {p.message}")
    return m, rows, problems, reasons


def _item_logits(args, detector, items, pipe) -> np.ndarray:
    """One logit per item through the engine's scoring loop (`score_batches`), on the GPU when there is one."""
    import torch
    from torch.utils.data import DataLoader

    from protocols.distributed import EvalBatches, gather_predictions
    from protocols.module import DetectorModule
    from protocols.scoring import score_batches

    norm = {} if pipe is None else {"normalize": {"name": pipe.normalize, "mean": list(pipe.mean),
                                                  "std": list(pipe.std)}}
    module = DetectorModule(detector, {"channels_last": False, **norm}, 1)
    loader = DataLoader(items, batch_sampler=EvalBatches(len(items), int(args.batch_size)), num_workers=0)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    outputs = score_batches(module, loader, "32-true", device, not args.no_progress, "predicting") \
        if len(items) else []
    return gather_predictions(outputs, len(items))[0]


def _write_maps(args, detector, m, rows) -> None:
    """A map detector's masks and maps of every image row (protocols.localization.write_map_pngs)."""
    from protocols.localization import MAPS_DIR, MASKS_DIR, map_png_name, write_map_pngs

    threshold, origin = mask_threshold(args.mask_threshold, args.checkpoint)
    images = [s for s in rows if s.kind == "image"]
    problems = write_map_pngs(detector, m.root, [s.path for s in images], [map_png_name(s.path) for s in images],
                              args.out, threshold)
    for p in problems:
        print(f"genshift: no map: {p}", file=sys.stderr)
    print(f"wrote {len(images) - len(problems)} localization maps to {args.out}/{MASKS_DIR}/ (threshold "
          f"{threshold:.4f}, {origin}) and {args.out}/{MAPS_DIR}/")


def mask_threshold(given: float | None, checkpoint: Path | None) -> tuple[float, str]:
    """(threshold of OUT/masks, where it comes from): --mask-threshold, else the window's validation pixel threshold
    (its localization.npz `pixel_threshold`, source validation), else 0.5."""
    if given is not None:
        if not 0.0 <= given <= 1.0:
            raise ValueError(f"--mask-threshold {given}: expected a number in [0, 1]")
        return float(given), "--mask-threshold"
    if checkpoint is not None:
        from common import localization_file

        path = Path(checkpoint) / localization_file.FILE_NAME
        if path.is_file():
            z = localization_file.read(path)
            if "pixel_threshold" in z and str(z.get("pixel_threshold_source", np.str_(""))) == "validation":
                t = float(z["pixel_threshold"])
                if t == t:
                    return t, f"chosen on the run's validation maps, rule {z['pixel_threshold_rule']}"
    return 0.5, "fixed 0.5: no validation pixel threshold"


def _run_pipeline(args, detector):
    """The input pipeline a checkpoint's run scored with (protocols.pipeline; its statistics and, for images, its
    resize/crop), so a checkpoint is scored on the inputs it was trained for; None for --detector (its own)."""
    if args.checkpoint is None or getattr(detector.meta, "input_kind", "image") != "image":
        return None
    from detectors.checkpoint import read_checkpoint_meta
    from protocols.pipeline import resolve_pipeline

    cfg = read_checkpoint_meta(args.checkpoint).get("config")
    return resolve_pipeline(cfg, detector.meta) if isinstance(cfg, dict) else None


def _count_items(extra: dict, n: int) -> np.ndarray:
    for key in ("segment_video", "frame_video", "item_row"):
        if key in extra:
            return np.bincount(extra[key], minlength=n)
    return np.ones(n, dtype=np.int64)


def _items(args, detector, m, rows, profile, cache_dir: Path, reasons: dict, pipe=None):
    """(dataset of items, fuse(item logits) -> (scores, logits, extra), what an item is, profile label).

    `pipe`: a checkpoint run's input pipeline. Images then take its input strategy; under the reference pipeline
    they are cut as the reference cuts them (torchvision v2 on the decoded PIL image, float [0, 1] crops)."""
    from benchmark.sequences import SequenceError, fuse_scores, score_to_logit

    if profile is not None:
        from benchmark.sequence_store import read_landmarks
        from protocols.sequence_inputs import SegmentDataset, eval_fusion

        frames = []
        for s in rows:
            try:
                frames.append(read_landmarks(m.root, s.path) if s.kind == "landmarks" else np.zeros((0, 136)))
            except (SequenceError, OSError) as e:
                frames.append(np.zeros((0, 136)))
                reasons.setdefault((s.split, s.id), []).append(str(e))
            if s.kind != "landmarks":
                reasons.setdefault((s.split, s.id), []).append(f"{s.kind} sample: {detector.meta.name} reads "
                                                              "landmark sequences")
        ds = SegmentDataset(frames, [s.label for s in rows], [s.id for s in rows], profile, train=False)
        return ds, eval_fusion(rows, ds, profile, m.root), "segments", profile.name
    meta = detector.meta
    if all(s.kind == "video" for s in rows):
        from protocols.frame_inputs import FrameArray, decode_frames, frame_fusion

        if pipe is not None and pipe.pipeline == "reference":
            print(f"genshift: note: the run scored images with the reference pipeline (defined for images); video "
                  f"frames are cut with {meta.name}'s own resize and normalised with the run's {pipe.normalize} "
                  "statistics", file=sys.stderr)

        sampling = {"every": args.frames_every} if args.frames_every else {"count": args.frames_count or 8}
        arr, frows, fidx, problems = decode_frames(m, rows, meta.input_size, meta.eval_resize, sampling,
                                                   not args.no_progress)
        for p in problems:
            print(f"genshift: {p}", file=sys.stderr)
        return (FrameArray(arr, frows), frame_fusion(len(rows), frows, fidx, args.aggregate or "mean", {}),
                "frames", f"frames {sampling}")
    if any(s.kind != "image" for s in rows):
        raise ValueError(f"{args.dataset} holds {sorted({s.kind for s in rows})} samples; {meta.name} scores "
                         "images or video frames")
    from benchmark.images import input_crops, to_chw
    from benchmark.imagestore import read_image

    strategy = pipe.input if pipe is not None else meta.eval_resize
    reference = pipe is not None and pipe.pipeline == "reference"
    crops, item_row = [], []
    for r, s in enumerate(rows):
        try:
            img = read_image(str(m.root), s.path)
        except Exception as e:  # noqa: BLE001 - an unreadable image is a NaN row with its reason
            reasons.setdefault((s.split, s.id), []).append(f"unreadable: {e}")
            continue
        if reference:
            from PIL import Image

            from benchmark.model_input import reference_crops, to_float

            cut = [to_float(c, meta.input_size).numpy()
                   for c in reference_crops(Image.fromarray(img), meta.input_size, strategy)]
        else:
            cut = [to_chw(c) for c in input_crops(img, meta.input_size, strategy)]
        crops += cut
        item_row += [r] * len(cut)
    dtype = np.float32 if reference else np.uint8
    arr = np.stack(crops) if crops else np.zeros((0, 3, meta.input_size, meta.input_size), dtype)
    rows_arr = np.asarray(item_row, dtype=np.int64)

    def fuse(logits):
        s = (1.0 / (1.0 + np.exp(-np.asarray(logits, dtype=np.float64)))).astype(np.float32)
        scores = fuse_scores(s, rows_arr, len(rows), "mean").astype(np.float32)
        extra = {"item_scores": s, "item_row": rows_arr} if len(arr) != len(rows) else {}
        return scores, score_to_logit(scores), extra

    from protocols.frame_inputs import FrameArray

    return FrameArray(arr, rows_arr), fuse, "images", f"{pipe.pipeline} {strategy}" if pipe is not None else strategy


def _write(out: Path, arrays: dict, rows, scores, n_items, reasons: dict, label: str) -> None:
    from common.atomic import atomic_path, atomic_write_text
    from common.run_dir import predictions_path

    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(predictions_path(out)) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["path", "split", "id", "label", "method", "compression", "video", "frames", "items", "score",
                "note"])
    for r, s in enumerate(rows):
        note = "; ".join(reasons.get((s.split, s.id), []))
        if np.isnan(scores[r]) and not note:
            note = f"no item to score ({label})"
        w.writerow([arrays["fused_paths"][r], s.split, s.id, s.label, s.generator or "real", s.compression, s.video,
                    s.frames, int(n_items[r]), "" if np.isnan(scores[r]) else f"{float(scores[r]):.6f}", note])
    atomic_write_text(out / "predictions.csv", buf.getvalue())
