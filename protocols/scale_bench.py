"""`genshift bench --scale ROWS`: time and peak memory of every stage of the data path on a release-format
dataset of ROWS rows, so that a measurement at scale is one repeatable command.

Stages, each a process of its own (its peak resident memory is the kernel's, as `/usr/bin/time -v` reports it):
`write` the dataset (AI-GenBench release format, `benchmark.testdata.write_scale_dataset`; skipped when it is
already in the work directory), `scan` (its manifest), `check` (`genshift data check`), `cache`
(`genshift cache build` of the detector's stores), `run` (the whole benchmark), `warm` (the same run again: every
window done, the stores only verified), `start` (a run started on the built stores and stopped, SIGTERM, as soon
as run.json records them: what a warm start spends verifying stores, without training). Each stage reports wall seconds, CPU seconds (user + system of the stage
and its worker processes: steadier than wall time on a shared machine) and peak RSS. Everything lives under `--workdir` (dataset, cache, runs), which the bench
never deletes: remove it when done, it holds the stores (GBs at 36,000 rows and 224 px).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from common import run_dir as layout

STAGES = ("write", "scan", "check", "cache", "run", "warm", "start")


def _stage(name: str, argv: list[str], log: Path, env: dict, stop_when=None) -> dict:
    """Run one stage as a child process; its wall time, exit code and peak RSS (wait4's ru_maxrss: the largest
    resident set of the child or any of its waited-for descendants). `stop_when()` true: SIGTERM the child."""
    t = time.perf_counter()
    with open(log, "ab") as out:
        out.write(f"\n=== {name}: {' '.join(argv)}\n".encode())
        out.flush()
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
        while stop_when is not None and proc.poll() is None:
            if stop_when():
                proc.send_signal(signal.SIGTERM)
                break
            time.sleep(0.2)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    return {"seconds": round(time.perf_counter() - t, 2), "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
            "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 2), "rc": proc.returncode, "command": argv}


def _du(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file()) if Path(path).exists() else 0


def scale_bench(args) -> dict:
    rows, (lo, hi) = int(args.scale), _size(args.image_size)
    work = Path(args.workdir).expanduser().resolve()
    work.mkdir(parents=True, exist_ok=True)
    data = work / f"release-{rows}-{lo}-{hi}px"
    cache, runs, log = work / "cache", work / "runs", work / "scale_bench.log"
    spec = f"aigenbench:{data}"
    py = [sys.executable, "-m", "protocols"]
    detector = args.detector or "smallcnn_tune"
    common = ["--dataset", spec, "--detector", detector, "--cache-dir", str(cache), "--preset", args.preset]
    common += ["--pretrained", args.pretrained] if args.pretrained else []
    for s in args.set:
        common += ["--set", s]
    run = [*py, "run", *common, "--runs-dir", str(runs), "--experiment", f"scale-{rows}-{detector}",
           "--no-progress", "--no-leaderboard"]
    commands = {
        "write": [sys.executable, "-c", "import json, sys; from benchmark.testdata import write_scale_dataset; "
                  f"print(json.dumps(write_scale_dataset({str(data)!r}, {rows}, ({lo}, {hi}), "
                  f"work_dir={str(work)!r})))"],
        "scan": [*py, "data", "info", spec, "--cache-dir", str(cache)],
        "check": [*py, "data", "check", spec, "--cache-dir", str(cache), "--no-progress", "--workers",
                  str(args.workers)],
        "cache": [*py, "cache", "build", *common, "--no-progress"],
        "run": run,
        "warm": run,
        "start": [*run[:-4], "--experiment", f"scale-start-{rows}-{detector}", "--no-progress", "--no-leaderboard"],
    }
    stages = [s.strip() for s in args.stages.split(",")] if args.stages else list(STAGES)
    unknown = sorted(set(stages) - set(STAGES))
    if unknown:
        from protocols.config import ConfigError

        raise ConfigError(f"--stages: unknown stage(s) {unknown}; choose from {', '.join(STAGES)}")
    env = os.environ | {"HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1")}
    out: dict = {"mode": "scale", "rows": rows, "image_size": [lo, hi], "detector": detector, "preset": args.preset,
                 "overrides": args.set, "workdir": str(work), "date": time.strftime("%Y-%m-%d %H:%M"),
                 "stages": {}}
    for name in stages:
        if name == "write" and (data / "dataset_dict.json").is_file():
            out["stages"][name] = {"skipped": f"{data} exists"}
            continue
        start_dir = runs / f"scale-start-{rows}-{detector}"
        if name == "start":
            shutil.rmtree(start_dir, ignore_errors=True)
        r = _stage(name, commands[name], log, env,
                   (lambda d=start_dir: bool(_run_facts(d))) if name == "start" else None)
        if name == "write":
            r["dataset_bytes"] = _du(data)
        if name == "cache":
            r["cache_bytes"] = _du(cache) - _du(cache / "datasets")
        if name in ("run", "warm"):
            r |= _run_facts(runs / f"scale-{rows}-{detector}")
        if name == "start":
            r |= _run_facts(start_dir)
            r["rc"] = 0 if r.get("verify_seconds") is not None else r["rc"]  # stopped on purpose (exit 75)
        out["stages"][name] = r
        print(_line(name, r), flush=True)
        if r["rc"] != 0:
            print(f"genshift bench --scale: stage {name} failed (exit {r['rc']}); see {log}", file=sys.stderr)
            break
    if args.clean_stores:
        for kind in ("eval", "train_inputs", "features"):
            shutil.rmtree(cache / kind, ignore_errors=True)
    return out


def _run_facts(run_dir: Path) -> dict:
    """Store verification time and which stores were found ready, from the run's run.json."""
    try:
        caches = layout.read_run_json(run_dir)["caches"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    stores = {k: v for k, v in caches.items() if isinstance(v, dict) and "verify_seconds" in v}
    return {"verify_seconds": round(sum(v["verify_seconds"] for v in stores.values()), 4),
            "verify_cpu_seconds": round(sum(v.get("verify_cpu_seconds", 0) for v in stores.values()), 4),
            "verify_per_store": {k: v["verify_seconds"] for k, v in stores.items()},
            "stores_hit": {k: bool(v.get("hit")) for k, v in stores.items()},
            "store_bytes": {k: v.get("bytes") for k, v in stores.items()}}


def _size(text: str) -> tuple[int, int]:
    lo, _, hi = str(text).partition("-")
    try:
        return int(lo), int(hi or lo)
    except ValueError:
        from protocols.config import ConfigError

        raise ConfigError(f"--image-size {text!r}: expected LO-HI in pixels, e.g. 64-96 or 512-1024") from None


def _line(name: str, r: dict) -> str:
    extra = ""
    if "verify_seconds" in r:
        extra = f"  stores verified in {r['verify_seconds']:.3f} s (CPU {r.get('verify_cpu_seconds', 0):.3f} s)"
    if "cache_bytes" in r:
        extra = f"  stores {r['cache_bytes'] / 1e9:.2f} GB"
    if "dataset_bytes" in r:
        extra = f"  dataset {r['dataset_bytes'] / 1e9:.2f} GB"
    cpu = f" (CPU {r['cpu_seconds']:.0f} s)" if "cpu_seconds" in r else ""
    return f"{name:<6} {r['seconds']:>9.1f} s{cpu}  peak RSS {r['peak_rss_mb']:>8.0f} MB  exit {r['rc']}{extra}"


def print_scale(doc: dict) -> None:
    print(f"genshift bench --scale {doc['rows']} ({doc['image_size'][0]}-{doc['image_size'][1]} px, detector "
          f"{doc['detector']}, {doc['date']}):")
    for name, r in doc["stages"].items():
        print("  " + (f"{name:<6} skipped: {r['skipped']}" if "skipped" in r else _line(name, r)))
