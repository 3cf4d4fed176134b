"""`genshift run --slurm`: write an sbatch script (optionally an array over detector/seed/... combinations),
print it (--dry-run) or submit it; the job's signal → checkpoint → requeue cycle resumes the same run.

Inside a task, windows run in order as in a local run. The script forwards SIGUSR1 (sent `signal_grace_seconds`
before the time limit) and SIGTERM (preemption, `scontrol requeue`) to genshift, which saves a train state and
exits with 75; the script then requeues the task, and the requeued task re-runs the same command, which
resumes from that state (checked against the run's id and config hash, so nothing of another run is used).
"""

from __future__ import annotations

import datetime as dt
import itertools
import os
import shlex
import subprocess
import sys
from pathlib import Path

from benchmark import strict_yaml
from protocols.config import CONFIG_DIR, ConfigError
from protocols.resume import EXIT_PREEMPTED

SLURM_DIR = CONFIG_DIR / "slurm"
SETTINGS = ("partition", "account", "qos", "time", "nodes", "gpus_per_node", "cpus_per_task", "mem",
            "constraint", "signal_grace_seconds", "max_parallel", "extra_sbatch", "setup", "job_name", "log_dir")
# `--array KEY=...` keys that are `genshift run` flags; any other key becomes `--set KEY=VALUE`.
FLAG_KEYS = {"detector": "--detector", "seed": "--seed", "pretrained": "--pretrained", "dataset": "--dataset",
             "preset": "--preset", "benchmark_type": "--benchmark-type", "benchmark-type": "--benchmark-type",
             "cl_strategy": "--cl-strategy", "cl-strategy": "--cl-strategy"}


class SlurmError(RuntimeError):
    """A SLURM setting, array spec or submission is wrong; the message says which and what to do."""


def job_record() -> dict:
    """This process's SLURM job identity (empty outside SLURM), recorded in run.json."""
    keys = {"job_id": "SLURM_JOB_ID", "array_job_id": "SLURM_ARRAY_JOB_ID", "array_task_id": "SLURM_ARRAY_TASK_ID",
            "restart_count": "SLURM_RESTART_COUNT", "job_name": "SLURM_JOB_NAME", "nodelist": "SLURM_JOB_NODELIST"}
    return {k: os.environ[v] for k, v in keys.items() if v in os.environ}


def available_profiles() -> list[str]:
    return sorted(p.stem for p in SLURM_DIR.glob("*.yaml"))


def _read_profile(path: Path) -> dict:
    """A SLURM profile: strict YAML (no `!!python` tags, no duplicated keys), a mapping."""
    doc = strict_yaml.read_file(path, "SLURM profile", ConfigError) or {}
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: a SLURM profile must be a mapping of settings, got {type(doc).__name__}")
    return doc


def load_profile(name_or_path: str | None) -> dict:
    """Settings from configs/slurm/<name>.yaml (or a YAML path); unknown keys are errors."""
    base = _read_profile(SLURM_DIR / "default.yaml")
    if not name_or_path or name_or_path == "default":
        return base
    path = Path(name_or_path)
    if not path.is_file():
        path = SLURM_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        raise ConfigError(f"unknown SLURM profile {name_or_path!r}: no such file, and not one of "
                          f"{available_profiles()} in {SLURM_DIR}")
    doc = _read_profile(path)
    unknown = sorted(set(doc) - set(SETTINGS))
    if unknown:
        raise ConfigError(f"{path}: unknown SLURM setting(s) {unknown}; known: {list(SETTINGS)}")
    return base | doc


def parse_array(specs: list[str]) -> list[dict[str, str]]:
    """["detector=A,B", "seed=0,1"] → one dict per combination (the last key varies fastest)."""
    axes = []
    for spec in specs:
        if "=" not in spec or not spec.split("=", 1)[1]:
            raise SlurmError(f"--array {spec!r}: expected KEY=V1,V2,... (e.g. detector=smallcnn_tune,RN50_tune)")
        key, values = spec.split("=", 1)
        vals = [v.strip() for v in values.split(",") if v.strip()]
        if key in [a[0] for a in axes]:
            raise SlurmError(f"--array: key {key!r} given twice")
        axes.append((key.strip(), vals))
    keys = [a[0] for a in axes]
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*[a[1] for a in axes])]


def task_args(combo: dict[str, str]) -> list[str]:
    out = []
    for key, value in combo.items():
        if key in FLAG_KEYS:
            out += [FLAG_KEYS[key], value]
        else:
            out += ["--set", f"{key}={value}"]
    return out


def render_script(run_args: list[str], combos: list[dict[str, str]], settings: dict, workdir: Path,
                  command: str = "run", task_lists: list[list[str]] | None = None, after: str | None = None) -> str:
    """The sbatch script: one array task per combination (or a single job), signal forwarding, requeue.

    `command` is the genshift subcommand each task runs (`run`, `cache build`); `task_lists` gives each array
    task's extra arguments directly (instead of `combos`); `after` makes the job wait for another job's success
    (``--dependency=afterok:<after>``), e.g. runs of several detectors after the cache build they share.
    """
    s = settings
    if task_lists is not None:
        combos = [{} for _ in task_lists]
    name = s.get("job_name") or "genshift"
    log_dir = Path(s.get("log_dir") or (workdir / "runs" / "slurm")).resolve()  # cmd_slurm sets <runs_dir>/slurm
    nodes = int(s.get("nodes") or 1)
    gpus = int(s.get("gpus_per_node") or 0)
    procs = max(gpus, 1)
    lines = ["#!/bin/bash", f"#SBATCH --job-name={name}", "#SBATCH --requeue", "#SBATCH --open-mode=append",
             f"#SBATCH --signal=B:USR1@{int(s.get('signal_grace_seconds') or 120)}",
             f"#SBATCH --nodes={nodes}", f"#SBATCH --ntasks-per-node={procs}"]
    array = len(combos) > 1 or bool(combos and combos[0]) or bool(task_lists)
    lines.append(f"#SBATCH --output={log_dir}/%x-{'%A_%a' if array else '%j'}.out")
    if array:
        throttle = f"%{int(s['max_parallel'])}" if s.get("max_parallel") else ""
        lines.append(f"#SBATCH --array=0-{len(combos) - 1}{throttle}")
    for key, flag in (("partition", "partition"), ("account", "account"), ("qos", "qos"), ("time", "time"),
                      ("cpus_per_task", "cpus-per-task"), ("mem", "mem"), ("constraint", "constraint")):
        if s.get(key) not in (None, ""):
            lines.append(f"#SBATCH --{flag}={s[key]}")
    if gpus:
        lines.append(f"#SBATCH --gpus-per-node={gpus}")
    if after:
        lines.append(f"#SBATCH --dependency=afterok:{after}")
    lines += [f"#SBATCH {x}" for x in (s.get("extra_sbatch") or [])]
    common = [sys.executable, "-m", "protocols", *command.split(), *run_args, "--no-progress"]
    if gpus > 1 or nodes > 1:
        common += ["--set", f"devices={procs}", "--set", f"num_nodes={nodes}"]
    launcher = "srun --kill-on-bad-exit=1 " if procs * nodes > 1 else ""
    body = [
        "",
        f"# written by genshift on {dt.datetime.now().isoformat(timespec='seconds')}; see protocols/slurm.py",
        "set -u",
        f"cd {shlex.quote(str(workdir))}",
        *(s.get("setup") or []),
        "TASK_ARGS=()",
    ]
    if array:
        body.append('case "${SLURM_ARRAY_TASK_ID:-0}" in')
        for i, combo in enumerate(combos):
            args = task_lists[i] if task_lists is not None else task_args(combo)
            body.append(f"  {i}) TASK_ARGS=({shlex.join(args)}) ;;")
        body += ['  *) echo "genshift: no combination for array task ${SLURM_ARRAY_TASK_ID}" >&2; exit 2 ;;', "esac"]
    body += [
        f"CMD=({shlex.join(common)} \"${{TASK_ARGS[@]}}\")",
        'echo "[genshift-slurm] job ${SLURM_JOB_ID} task ${SLURM_ARRAY_TASK_ID:-none} '
        'restart ${SLURM_RESTART_COUNT:-0} on $(hostname): ${CMD[*]}"',
        "child=",
        'forward() { echo "[genshift-slurm] received $1, asking genshift to checkpoint"; '
        '[ -n "$child" ] && kill -s "$1" "$child" 2>/dev/null; }',
        "trap 'forward USR1' USR1",
        "trap 'forward TERM' TERM",
        f'{launcher}"${{CMD[@]}}" &',
        "child=$!",
        "while :; do",
        '  wait "$child"; rc=$?',
        '  kill -0 "$child" 2>/dev/null || break  # a trap interrupted wait: keep waiting for genshift',
        "done",
        f'if [ "$rc" -eq {EXIT_PREEMPTED} ]; then',
        '  jid="${SLURM_ARRAY_JOB_ID:-}"; [ -n "$jid" ] && jid="${jid}_${SLURM_ARRAY_TASK_ID}" || jid="$SLURM_JOB_ID"',
        '  echo "[genshift-slurm] state saved; requeueing $jid"',
        '  scontrol requeue "$jid" || echo "[genshift-slurm] requeue of $jid refused (already requeued?)"',
        "fi",
        'exit "$rc"',
    ]
    return "\n".join(lines + body) + "\n"


def submit(script: str, settings: dict, workdir: Path) -> tuple[Path, str]:
    """Write the script under the log directory and sbatch it; returns (script path, job id)."""
    log_dir = Path(settings.get("log_dir") or (workdir / "runs" / "slurm")).resolve()
    log_dir.mkdir(parents=True, exist_ok=True)
    path = log_dir / f"{settings.get('job_name') or 'genshift'}-{dt.datetime.now().strftime('%Y%m%d-%H%M%S-%f')}.sbatch"
    path.write_text(script)
    try:
        proc = subprocess.run(["sbatch", "--parsable", str(path)], capture_output=True, text=True, timeout=120)
    except FileNotFoundError as e:
        raise SlurmError("sbatch not found: run this on a SLURM login node, or use --dry-run to print the "
                         f"script ({path})") from e
    if proc.returncode != 0:
        said = " ".join((proc.stderr.strip() or proc.stdout.strip()).split())
        hint = ""
        if "generic resource" in said.lower() or "gres" in said.lower():  # e.g. "Invalid generic resource (gres)"
            gpus = int(settings.get("gpus_per_node") or 0)
            hint = (f"; this cluster (or partition) has no GPUs of that kind for the {gpus} GPU(s) per node asked: "
                    "use --slurm-profile cpu for CPU-only nodes, or --gpus 0, or choose a GPU partition with "
                    "--partition")
        raise SlurmError(f"sbatch {path} failed (exit {proc.returncode}): {said}{hint}")
    return path, proc.stdout.strip().split(";")[0]


def strip_flags(argv: list[str], flags: dict[str, int]) -> list[str]:
    """argv without the given options (name → number of values; -1 = all values up to the next option)."""
    out, i = [], 0
    while i < len(argv):
        a = argv[i]
        name = a.split("=", 1)[0]
        if name in flags:
            n = flags[name]
            i += 1
            if "=" in a:
                continue
            if n < 0:
                while i < len(argv) and not argv[i].startswith("--"):
                    i += 1
            else:
                i += n
            continue
        out.append(a)
        i += 1
    return out
