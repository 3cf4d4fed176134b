"""`genshift data ...`: info, check and degrade, as a subcommand group that the main CLI registers.

Wiring: `from benchmark.cli import register, run_data`; `register(subparsers)` adds `data` with its
sub-commands and `run_data(args) -> int` executes one (0 ok, 1 check found errors).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from benchmark.datacheck import DEFAULT_MIN_SIDE
from benchmark.formats import DEFAULT_BASE_SEED, DegradationProfile


def register(sub) -> argparse.ArgumentParser:
    """Add the `data` command group (info, check, degrade) to an argparse subparsers object."""
    data = sub.add_parser("data", help="inspect, check and degrade datasets",
                          description="Dataset specs: synthetic[:smoke|default|formats|formats-smoke], aigenbench:PATH, folder:ROOT, "
                                      "csv:FILE; real sources take ?timeline=YAML (see docs/datasets.md).")
    dsub = data.add_subparsers(dest="data_command", required=True)

    p = dsub.add_parser("info", help="build/verify a source's manifest and print its summary (JSON)")
    p.add_argument("source", help="dataset spec, e.g. aigenbench:/data/ai_gen_bench_v1.0.0")
    p.add_argument("--cache-dir")
    p.add_argument("--generators-per-window", type=int, default=4)

    p = dsub.add_parser("check", help="check a dataset: records, counts, balance, every image, duplicates",
                        description="Exit status 0 when no error is found, 1 otherwise. Errors: bad records "
                                    "(label, undated generator, missing file), unreadable/truncated images, "
                                    "images below --min-side, exact duplicates across splits. Warnings: EXIF "
                                    "rotation, eval imbalance, duplicates within a split.")
    p.add_argument("source", help="dataset spec")
    p.add_argument("--cache-dir")
    p.add_argument("--json", action="store_true", help="print the report as JSON (for scripts)")
    p.add_argument("--min-side", type=int, default=DEFAULT_MIN_SIDE,
                   help=f"shortest allowed image side in pixels (default {DEFAULT_MIN_SIDE})")
    p.add_argument("--workers", type=int, default=2, help="processes decoding images (default 2)")
    p.add_argument("--recheck", action="store_true",
                   help="trust no cached result: hash and decode every file again and replace the cached scan and "
                        "check (the cache otherwise trusts files whose path, size, times and inode are unchanged)")
    p.add_argument("--profile", default="lrnet-v1", choices=("lrnet-v1", "fixed"),
                   help="landmark sequences: the segment profile whose empty videos are errors (default lrnet-v1, "
                        "LRNet's: a video of exactly 30 frames has no segment)")
    p.add_argument("--segment-length", type=int, default=30, help="landmark sequences: frames per segment (30)")
    p.add_argument("--no-progress", action="store_true")

    p = dsub.add_parser("degrade", help="show the mandatory eval degradations on one image at one eval position",
                        description="Writes OUT.npy (float32 CHW, nominal [0, 1]: exactly what the detector's "
                                    "own resize/crop receives) and OUT.png (a preview), and prints the steps "
                                    "that fired with their drawn parameters. With --model-input: writes exactly "
                                    "OUT, the model input float32 [n_crops, 3, S, S] of the reference pipeline "
                                    "(torchvision v2 resize/crop on the chain's own output type, ToDtype, "
                                    "Normalize), as AI-GenBench's evaluation feeds its model.")
    p.add_argument("image", help="an image file")
    p.add_argument("--position", type=_non_negative, required=True,
                   help=f"position in the shuffled eval set (seed BASE_SEED+P, default {DEFAULT_BASE_SEED}+P)")
    p.add_argument("--profile", default=DegradationProfile.AIGENBENCH_V1.value,
                   help="aigenbench-v1 (default, faithful) | fixed, optionally +reencode<Q> (JPEG at quality Q first)")
    p.add_argument("--base-seed", type=_non_negative, default=DEFAULT_BASE_SEED)
    p.add_argument("--out", required=True,
                   help="output prefix: writes OUT.npy and OUT.png; with --model-input the file OUT itself")
    p.add_argument("--model-input", choices=("resize", "center_crop", "five_crop"),
                   help="write the reference pipeline's model input instead: resize (both sides to S), "
                        "center_crop, five_crop (4 corners + centre; one centre crop when a side is <= S)")
    p.add_argument("--normalize", choices=("clip", "imagenet", "none"),
                   help="with --model-input: normalisation statistics (default clip, the reference's)")
    p.add_argument("--size", type=int, default=224, help="with --model-input: model input side S (default 224)")
    p.add_argument("--json", action="store_true", help="print the step records as JSON")
    data.set_defaults(handler=run_data)
    return data


def _non_negative(text: str) -> int:
    """argparse type: an integer >= 0 (argparse turns the ValueError into a one-line usage error)."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _cache(args) -> Path:
    from benchmark.sources import resolve_cache_dir

    return resolve_cache_dir(args.cache_dir)


def cmd_info(args) -> int:
    from benchmark.formats import format_counts
    from benchmark.sources import load_source
    from benchmark.timeline import generator_id_to_name, make_windows

    m = load_source(args.source, _cache(args))
    info = {
        "name": m.name, "root": str(m.root), "checksum": m.checksum,
        "train": {"reals": sum(s.label == 0 for s in m.split("train")),
                  "fakes": sum(s.label == 1 for s in m.split("train"))},
        "eval": {"reals": sum(s.label == 0 for s in m.split("eval")),
                 "fakes": sum(s.label == 1 for s in m.split("eval"))},
        **({"val": {"reals": sum(s.label == 0 for s in m.split("val")),
                    "fakes": sum(s.label == 1 for s in m.split("val"))}} if m.split("val") else {}),
        **({"compression": sorted({s.compression for s in m.samples})} if any(s.compression for s in m.samples)
           else {}),
        **({"formats": {split: format_counts(m.split(split)) for split in ("train", "eval")}}
           if any(s.format for s in m.samples) else {}),
        "generators": len(m.timeline),
        "generator_id_to_name": generator_id_to_name(m.timeline),
        "windows": make_windows(m.timeline, args.generators_per_window),
        "notes": m.extra.get("notes", []),
    }
    print(json.dumps(info, indent=1))
    return 0


def cmd_check(args) -> int:
    from benchmark.datacheck import check_spec, format_report

    report = check_spec(args.source, _cache(args), args.min_side, args.workers, progress=not args.no_progress,
                        fresh=args.recheck, segment_length=args.segment_length, profile=args.profile)
    print(json.dumps(report.to_dict(), indent=1) if args.json else format_report(report))
    return 0 if report.ok else 1


def cmd_degrade(args) -> int:
    import numpy as np
    from PIL import Image

    from benchmark.degradations import degrade_float
    from benchmark.formats import profile_problem
    from benchmark.images import load_rgb
    from common.atomic import atomic_path

    problem = profile_problem(args.profile)
    if problem:
        print(f"genshift: error: {problem}", file=sys.stderr)
        return 2
    if args.base_seed + args.position >= 2**31:
        print(f"genshift: error: --base-seed + --position = {args.base_seed + args.position} must be below 2^31 "
              "(the reference's RNG limit)", file=sys.stderr)
        return 2
    if args.model_input:
        return _degrade_model_input(args)
    if args.normalize:
        print("genshift: error: --normalize applies to --model-input only", file=sys.stderr)
        return 2
    img = load_rgb(args.image)
    out, records = degrade_float(img, args.position, args.profile, args.base_seed)
    prefix = Path(args.out)
    if prefix.suffix in (".npy", ".png"):
        prefix = prefix.with_suffix("")
    prefix.parent.mkdir(parents=True, exist_ok=True)
    npy, png = prefix.with_name(prefix.name + ".npy"), prefix.with_name(prefix.name + ".png")
    with atomic_path(npy) as tmp, open(tmp, "wb") as f:
        np.save(f, out)
    preview = np.clip(np.rint(out.transpose(1, 2, 0) * 255.0), 0, 255).astype(np.uint8)
    with atomic_path(png) as tmp:
        Image.fromarray(preview).save(tmp, format="PNG")
    if args.json:
        print(json.dumps({"input": args.image, "input_shape": list(img.shape), "position": args.position,
                          "profile": args.profile, "seed": args.base_seed + args.position,
                          "output_shape": list(out.shape), "steps": records,
                          "npy": str(npy), "png": str(png)}, indent=1))
        return 0
    print(f"{args.image}: {img.shape[1]}x{img.shape[0]}, eval position {args.position}, profile {args.profile}, "
          f"seed {args.base_seed + args.position}")
    for r in records:
        params = ", ".join(f"{k}={v}" for k, v in r.items() if k not in ("step", "fired"))
        print(f"  {r['step']:<20} {'fired' if r['fired'] else '-':<6} {params}")
    print(f"output: float32 {tuple(out.shape)} (CHW), range [{out.min():.4f}, {out.max():.4f}] -> {npy}; "
          f"preview -> {png}")
    return 0


def _degrade_model_input(args) -> int:
    """`data degrade --model-input`: the reference pipeline's model input written exactly to --out."""
    import numpy as np

    from benchmark.images import load_rgb
    from benchmark.model_input import reference_model_input
    from common.atomic import atomic_path

    if args.size < 1:
        print(f"genshift: error: --size must be >= 1, got {args.size}", file=sys.stderr)
        return 2
    norm = args.normalize or "clip"
    img = load_rgb(args.image)
    x, records = reference_model_input(img, args.position, args.profile, args.base_seed, args.size, args.model_input,
                                       norm)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp, open(tmp, "wb") as f:
        np.save(f, x)
    chain_type = records[-1]["output_type"]
    if args.json:
        print(json.dumps({"input": args.image, "input_shape": list(img.shape), "position": args.position,
                          "profile": args.profile, "seed": args.base_seed + args.position,
                          "model_input": args.model_input, "normalize": norm, "size": args.size,
                          "chain_output_type": chain_type, "output_shape": list(x.shape), "steps": records[:-1],
                          "npy": str(out)}, indent=1))
        return 0
    print(f"{args.image}: {img.shape[1]}x{img.shape[0]}, eval position {args.position}, profile {args.profile}, "
          f"seed {args.base_seed + args.position}")
    for r in records[:-1]:
        params = ", ".join(f"{k}={v}" for k, v in r.items() if k not in ("step", "fired"))
        print(f"  {r['step']:<20} {'fired' if r['fired'] else '-':<6} {params}")
    print(f"model input ({args.model_input} of the chain's {chain_type} output, normalised with {norm}): float32 "
          f"{tuple(x.shape)}, range [{x.min():.4f}, {x.max():.4f}] -> {out}")
    return 0


def run_data(args) -> int:
    """Execute `genshift data <command>`."""
    return {"info": cmd_info, "check": cmd_check, "degrade": cmd_degrade}[args.data_command](args)


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry (`python -m benchmark.cli data ...`), same behaviour as `genshift data`."""
    from benchmark.images import ImageReadError
    from benchmark.manifest import ManifestError
    from benchmark.sources import SourceError
    from benchmark.timeline import TimelineError

    parser = argparse.ArgumentParser(prog="genshift")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        return run_data(args)
    except (SourceError, ManifestError, TimelineError, ImageReadError, FileNotFoundError, ValueError) as e:
        print(f"genshift: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
