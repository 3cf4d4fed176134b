"""genshift under a real single-node SLURM (munged + slurmctld + slurmd started by the fixture).

Skipped with a reason where the Debian packages (slurmctld slurmd slurm-client munge) are missing or not
root; `.ci/run` installs them when it runs as root.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from conftest import SMALL_RUN_FLAGS
from slurm_cluster import Cluster, why_unavailable

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(why_unavailable() is not None, reason=str(why_unavailable()))


@pytest.fixture(scope="module")
def cluster():
    root = Path(tempfile.mkdtemp(prefix="genshift-slurm-", dir="/tmp"))
    c = Cluster(root).start()
    yield c
    c.stop()


def submit(cluster, tmp_path, cache_dir, *extra: str, env: dict | None = None) -> str:
    runs = tmp_path / "runs"
    proc = subprocess.run(
        [sys.executable, "-m", "protocols", "run", *SMALL_RUN_FLAGS, "--runs-dir", str(runs), "--cache-dir",
         str(cache_dir), "--slurm", "--slurm-profile", "cpu", *extra],
        cwd=ROOT, env=cluster.env | {"HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"} | (env or {}),
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("submitted SLURM job "), proc.stdout
    return proc.stdout.split()[3]


def same_predictions(a: Path, b: Path) -> bool:
    return all((a / f"window_{k}" / "predictions.npz").read_bytes() == (b / f"window_{k}" / "predictions.npz").read_bytes()
               for k in range(2))


def _slurm_logs(runs: Path) -> str:
    """Every task log of the test's jobs (what genshift printed under SLURM), for assertion messages."""
    return "".join(f"\n--- {p.name}\n{p.read_text()}" for p in sorted((runs / "slurm").glob("*.out")))


def test_dry_run_prints_the_array_script(cluster, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "protocols", "run", "--preset", "smoke", "--slurm", "--dry-run", "--array",
         "detector=smallcnn_tune,smallcnn_probe", "seed=0,1", "--partition", "debug", "--time", "00:30:00",
         "--gpus", "0", "--cpus", "1", "--mem", "1G",
         "--runs-dir", str(tmp_path)], cwd=ROOT, env=cluster.env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    script = proc.stdout
    for line in ("#SBATCH --array=0-3", "#SBATCH --requeue", "#SBATCH --partition=debug", "#SBATCH --time=00:30:00",
                 "#SBATCH --signal=B:USR1@180", "3) TASK_ARGS=(--detector smallcnn_probe --seed 1) ;;"):
        assert line in script, line
    assert "--slurm" not in script.split("CMD=(")[1].split(")")[0]  # the task runs genshift itself, locally
    path = tmp_path / "job.sbatch"
    path.write_text(script)
    test = subprocess.run(["sbatch", "--test-only", str(path)], env=cluster.env, capture_output=True, text=True)
    assert test.returncode == 0, test.stderr  # the real sbatch accepts it


@pytest.mark.slow  # ~2 min on 2 cores: 4 local reference runs + 4 array tasks, two at a time
def test_array_of_two_detectors_by_two_seeds_matches_local_runs(cluster, tmp_path, cache_dir, small_reference):
    job = submit(cluster, tmp_path, cache_dir, "--array", "detector=smallcnn_tune,smallcnn_probe", "seed=0,1")
    states = cluster.wait_jobs(job, 4, timeout=600)
    assert set(states.values()) == {"COMPLETED"}, (states, _slurm_logs(tmp_path / "runs"), cluster.daemon_logs())
    for det in ("smallcnn_tune", "smallcnn_probe"):
        for seed in (0, 1):
            run = tmp_path / "runs" / f"synthetic-smoke__{det}__cumulative__seed{seed}"
            assert same_predictions(run, small_reference(det, seed)), (det, seed)
            info = json.loads((run / "run.json").read_text())
            assert info["slurm"]["array_job_id"] == job and info["slurm"]["job_id"]


def _genshift_stopped(runs: Path) -> bool:
    """A genshift process of this test is stopped (state T): it sent itself SIGSTOP at the chosen batch."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            cmd = (stat.parent / "cmdline").read_bytes().decode(errors="replace")
            state = stat.read_text().split(")")[-1].split()[0]
        except OSError:
            continue
        if str(runs) in cmd and "protocols" in cmd and state == "T":
            return True
    return False


def test_preempted_task_is_requeued_and_resumes_to_identical_predictions(cluster, tmp_path, cache_dir,
                                                                         small_reference):
    # Attempt 1 gets SIGUSR1 (what SLURM sends before the time limit) after batch 7 of window 1: it saves its
    # state, exits 75 and the script requeues it. Attempt 2 resumes at batch 7 and is stopped after batch 12;
    # then `scontrol requeue` from outside (SLURM sends SIGCONT + SIGTERM) preempts it. Attempt 3 finishes.
    job = submit(cluster, tmp_path, cache_dir, "--detector", "smallcnn_tune",
                 env={"GENSHIFT_DIE_AT": "train_batch:1:7:USR1,train_batch:1:12:STOP"})
    runs = tmp_path / "runs"
    end = time.time() + 400
    while not _genshift_stopped(runs) and time.time() < end:
        time.sleep(0.5)
    assert _genshift_stopped(runs), (cluster.job_states(job), _slurm_logs(runs), cluster.daemon_logs())
    requeue = subprocess.run(["scontrol", "requeue", job], env=cluster.env, capture_output=True, text=True)
    assert requeue.returncode == 0, requeue.stderr
    states = cluster.wait_jobs(job, 1, timeout=400)
    run = runs / "synthetic-smoke__smallcnn_tune__cumulative__seed0"
    log = _slurm_logs(runs)
    assert states[job] == "COMPLETED", (states, log, cluster.daemon_logs())
    assert "received SIGUSR1" in log and "requeueing" in log and "received SIGTERM" in log, log
    assert "window 2/2: resuming after batch 7/19" in log and "window 2/2: resuming after batch 12/19" in log, log
    assert same_predictions(run, small_reference("smallcnn_tune", 0))
    info = json.loads((run / "run.json").read_text())
    assert [a.get("restart_count", "0") for a in info["attempts"]] == ["0", "1", "2"]
    assert all(a["job_id"] == job for a in info["attempts"])


@pytest.mark.slow  # ~3 min on 2 cores: a check job, 2 shard tasks, then 2 runs
def test_sharded_cache_build_then_runs_of_two_detectors_after_it_share_its_stores(cluster, tmp_path, cache_dir,
                                                                                   small_reference):
    """`genshift cache build --slurm --shards 2` (a data-check job, then an array of two shard tasks, each a range
    of every store's chunks), then `genshift run --slurm --after <array> --array detector=...`: the runs wait for
    the build (afterok), find every pixel store complete (hit) and predict exactly as local runs do."""
    from benchmark.array_store import describe_stores
    from benchmark.sources import load_source

    load_source("synthetic:smoke", cache_dir, progress=False)
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "datasets").symlink_to(Path(cache_dir, "datasets").resolve())
    env = cluster.env | {"HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}
    build = subprocess.run(
        [sys.executable, "-m", "protocols", "cache", "build", *SMALL_RUN_FLAGS[:2], "--detector", "smallcnn_tune",
         *SMALL_RUN_FLAGS[4:], "--set", "cache.chunk_mb=0.4", "--cache-dir", str(cache), "--slurm", "--shards", "2",
         "--slurm-profile", "cpu", "--parsable"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert build.returncode == 0, build.stderr
    array = build.stdout.strip()
    runs = tmp_path / "runs"
    job = submit(cluster, tmp_path, cache, "--after", array, "--array", "detector=smallcnn_tune,smallcnn_probe")
    build_states = cluster.wait_jobs(array, 2, timeout=600)
    logs = "".join(f"\n--- {p.name}\n{p.read_text()}" for p in sorted((cache / "slurm").glob("*.out")))
    assert set(build_states.values()) == {"COMPLETED"}, (build_states, logs, cluster.daemon_logs())
    assert "(shard 0/2)" in logs and "(shard 1/2)" in logs and "data checked and budget fits" in logs, logs
    states = cluster.wait_jobs(job, 2, timeout=600)
    assert set(states.values()) == {"COMPLETED"}, (states, _slurm_logs(runs), cluster.daemon_logs())
    stores = describe_stores(cache)
    pixel = [s for s in stores if s["kind"] in ("eval", "train_inputs")]
    assert len(pixel) == 2 and all(s["complete"] and s["chunks"] > 2 for s in pixel), stores
    for det in ("smallcnn_tune", "smallcnn_probe"):
        run = runs / f"synthetic-smoke__{det}__cumulative__seed0"
        caches = json.loads((run / "run.json").read_text())["caches"]
        assert caches["eval_inputs"]["hit"] and caches["train_inputs"]["hit"], (det, caches)
        assert same_predictions(run, small_reference(det, 0)), det
