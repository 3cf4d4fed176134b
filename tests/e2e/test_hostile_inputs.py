"""Hostile and careless input, replayed table by table (docs/safety.md says what genshift refuses and why).

Three rules: no code runs from any file genshift reads (a `__reduce__` payload is planted in every file kind);
a user mistake is one `genshift: error:` line with exit 2, before anything is touched; no trained window is lost
to a typo or to a failure while scoring. Read-only and full disks are real small tmpfs mounts where this process
may mount them (root), else the atomic writer's fault injection (GENSHIFT_WRITE_FAULT).
"""

from __future__ import annotations

import builtins
import io
import json
import os
import pickle
import shutil
import struct
import subprocess
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from helpers import make_image, png_bytes, write_folder_dataset

from leaderboard.bench import fabricate_eval_set, fabricate_run
from protocols.cli import main
from protocols.predictions import SCHEMA_VERSION

SMOKE = ["--preset", "smoke", "--no-progress", "--no-leaderboard", "--set", "benchmark.generators_per_window=12",
         "--set", "threads=1"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> list[str]:
    """`genshift run` arguments for a two-window folder dataset of a few small images (seconds to train) with its
    own cache: the run-based cases below need no synthetic dataset."""
    base = tmp_path_factory.mktemp("tiny")
    root = write_folder_dataset(base / "data", {"GanA": "2018-01-01", "GanB": "2019-01-01"}, train_fakes=4,
                                eval_fakes=3)
    return ["--dataset", f"folder:{root}", "--preset", "smoke", "--no-progress", "--no-leaderboard",
            "--set", "benchmark.generators_per_window=1", "--set", "threads=1", "--cache-dir", str(base / "cache")]


class Payload:
    """Unpickling this calls builtins.open(marker, "w"): the marker file appears if any code ran."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return builtins.open, (self.marker, "w")


@pytest.fixture
def marker(tmp_path):
    """A file that only a payload can create; the test fails if it exists afterwards."""
    path = tmp_path / "PAYLOAD-RAN"
    yield path
    assert not path.exists(), "a payload planted in a file was executed"


def cli(argv, capsys) -> tuple[int, str, str]:
    """Run `genshift ARGV` in this process: (exit code, stdout, stderr). An exception escaping is a bug."""
    try:
        rc = main([str(a) for a in argv])
    except SystemExit as e:  # argparse
        rc = e.code
    out, err = capsys.readouterr()
    return rc, out, err


def one_line_error(rc: int, err: str, *needles: str) -> str:
    """Assert a user error: exit 2, no traceback, the last stderr line is the only `genshift: error:` line and
    names every needle; return it."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc == 2, err
    assert "Traceback" not in err, err
    assert lines and lines[-1].startswith("genshift: error: "), err
    assert sum(line.startswith("genshift: error") for line in lines) == 1, err
    for needle in needles:
        assert needle in lines[-1], (needle, lines[-1])
    return lines[-1]


# Every item of the hostile-input probe and the test(s) replaying it (test_every_item_is_replayed checks the names).
ITEMS = {
    "results file runs code (AI-GenBench object arrays)": [
        "test_payload_in_aigenbench_npz_is_refused_naming_file_and_key",
        "test_payload_with_a_builtins_name_outside_the_allowlist_is_refused",
        "test_aigenbench_name_arrays_load_under_numpy1_and_numpy2_names"],
    "payload in every other file kind": [
        "test_payload_in_genshift_npz_is_refused", "test_payload_in_json_files_is_refused",
        "test_payload_in_cached_array_is_refused", "test_payload_in_weights_checkpoint_and_train_state_is_refused",
        "test_python_tags_in_yaml_are_refused"],
    "train.lr=1e-3 crashes, then 'another configuration'": [
        "test_lr_written_1e_3_trains_and_the_corrected_command_resumes_the_same_run",
        "test_values_are_coerced_to_the_type_of_their_default"],
    "eval.batch_size=-1 throws away a trained window": [
        "test_bad_value_is_one_line_before_anything_is_touched", "test_failure_while_scoring_keeps_the_trained_window"],
    "type and range errors, misspelt benchmark type": [
        "test_bad_value_is_one_line_before_anything_is_touched", "test_schema_choices_match_their_owners",
        "test_every_default_fits_the_schema_and_only_operational_keys_leave_the_hash"],
    "duplicate keys in timeline or config YAML": [
        "test_data_mistakes_are_one_line", "test_duplicate_keys_in_a_config_file_are_refused"],
    "impossible date; missing folder:/csv: path": ["test_data_mistakes_are_one_line"],
    "data degrade: decompression bomb, negative position": ["test_data_degrade_refuses_in_one_line"],
    "symbolic links": ["test_symlinks_one_policy"],
    "same file labelled real and fake": ["test_same_bytes_labelled_real_and_fake_is_an_error"],
    "file bytes echoed": ["test_no_file_bytes_are_echoed"],
    "cached data check keyed on size and mtime, no recheck": [
        "test_file_swapped_with_size_and_mtime_kept_is_found", "test_recheck_trusts_no_cached_result"],
    "predictions.npz from another run accepted": [
        "test_leaderboard_refuses_a_window_copied_from_another_run",
        "test_identical_runs_write_identical_predictions_with_their_identity"],
    "inspect on a non-npz or empty file": ["test_inspect_on_a_file_that_is_not_an_npz"],
    "LaTeX escaping": ["test_latex_output_is_fully_escaped"],
    "read-only and full file systems": [
        "test_full_and_read_only_disks_are_one_line_and_lose_nothing",
        "test_run_on_a_full_disk_is_one_line_then_resumes"],
    "bad weight files": [
        "test_bad_weight_files_are_one_line", "test_payload_in_weights_checkpoint_and_train_state_is_refused"],
    "--experiment ../x, --experiment . --force-new": [
        "test_bad_value_is_one_line_before_anything_is_touched", "test_force_new_with_a_dot_experiment_moves_nothing",
        "test_run_directory_leading_out_of_runs_dir_is_refused"],
    "leaderboard output into a common parent": ["test_leaderboard_output_defaults"],
    "run --help 'more sources to come'": ["test_run_help_lists_the_source_kinds"],
    "SLURM without GPUs": ["test_slurm_without_gpus_names_the_cpu_profile"],
}


def test_every_item_is_replayed():
    missing = sorted({name for names in ITEMS.values() for name in names} - set(globals()))
    assert not missing, f"ITEMS names tests that do not exist: {missing}"


# ------------------------------------------------------------------------------------- 1. no code from files

def _npy_with_pickle(arr: np.ndarray, numpy1_names: bool = False) -> bytes:
    """The .npy bytes numpy writes for an object array; `numpy1_names`: its pickle names numpy 1's module."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, np.lib.format.header_data_from_array_1_0(arr))
    body = pickle.dumps(arr, protocol=3)  # numpy 1.x wrote protocol 3: GLOBAL opcodes are text lines
    if numpy1_names:
        body = body.replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")
        assert b"numpy.core.multiarray\n" in body
    return buf.getvalue() + body


def _write_npz(path: Path, arrays: dict, raw_members: dict[str, bytes] | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as zf:
        for key, arr in arrays.items():
            buf = io.BytesIO()
            np.save(buf, np.asanyarray(arr), allow_pickle=True)
            zf.writestr(f"{key}.npy", buf.getvalue())
        for key, data in (raw_members or {}).items():
            zf.writestr(f"{key}.npy", data)
    return path


def _objects(*items) -> np.ndarray:
    arr = np.empty(len(items), dtype=object)
    arr[:] = list(items)
    return arr


def _reference_arrays(n: int = 40) -> dict:
    """A small AI-GenBench predictions file (binary, fused scores) with unequal windows (pickled timeline)."""
    rng = np.random.default_rng(0)
    gen = np.r_[np.repeat([1, 2, 3], n // 6), np.zeros(n // 2, dtype=np.int64)]
    pairing = np.r_[np.full(n // 2, -1), np.repeat([1, 2, 3], n // 6)]
    return {"fused_scores": rng.random(gen.size).astype(np.float32), "fused_labels": (gen != 0).astype(np.int64),
            "fused_generator_ids": gen, "identifier": np.arange(gen.size), "pairing": pairing,
            "generator_id_to_name": np.array(["", "A", "B", "C"]), "windows_timeline": _objects(["A", "B"], ["C"])}


def test_payload_is_live_when_unpickled_without_protection(tmp_path):
    """Control: the payload used below really runs when a file is unpickled the unsafe way."""
    path = _write_npz(tmp_path / "p.npz", {"x": _objects(Payload(tmp_path / "ran"))})
    with np.load(path, allow_pickle=True) as z:
        z["x"]
    assert (tmp_path / "ran").exists()


def test_aigenbench_name_arrays_load_under_numpy1_and_numpy2_names(tmp_path):
    """The allowlist admits exactly numpy's array reconstruction, under both names, and plain values."""
    from leaderboard.inspect import load_predictions

    for numpy1 in (False, True):
        arrays = _reference_arrays()
        timeline = arrays.pop("windows_timeline")
        path = _write_npz(tmp_path / f"n{numpy1}" / "window_0" / "predictions_validate_all.npz", arrays,
                          {"windows_timeline": _npy_with_pickle(timeline, numpy1)})
        got = load_predictions(path)
        assert got["windows_timeline"].tolist() == [["A", "B"], ["C", ""]]


def _plant_reference(tmp_path, marker, key):
    arrays = _reference_arrays()
    arrays[key] = _objects(["A", "B"], [Payload(marker)]) if key == "windows_timeline" else \
        _objects(Payload(marker), "A", "B", "C") if key == "generator_id_to_name" else _objects(Payload(marker))
    return _write_npz(tmp_path / "exp" / "window_0" / "predictions_validate_all.npz", arrays)


def _plant_genshift_npz(tmp_path, marker):
    run = fabricate_run(tmp_path / "runs" / "r", fabricate_eval_set(60, 2, per_window=2), n_done=1)
    path = run / "window_0" / "predictions.npz"
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["fused_scores"] = _objects(Payload(marker))
    _write_npz(path, arrays)
    return run


def _raw_pickle_global(module: str, name: str, marker: Path) -> bytes:
    """A protocol-0 pickle calling module.name(<marker path>, 'w') (an allowed module, a refused name)."""
    return f"c{module}\n{name}\n(V{marker}\nVw\ntR.".encode()


# Every file kind genshift reads, with the payload that kind can carry and how genshift reads it.
PAYLOAD_CASES = {
    "aigenbench npz: windows_timeline (inspect)": "windows_timeline",
    "aigenbench npz: generator_id_to_name (inspect)": "generator_id_to_name",
    "aigenbench npz: another key (inspect)": "crop_scores",
}


@pytest.mark.parametrize("key", list(PAYLOAD_CASES.values()), ids=list(PAYLOAD_CASES))
def test_payload_in_aigenbench_npz_is_refused_naming_file_and_key(key, tmp_path, marker, capsys):
    path = _plant_reference(tmp_path, marker, key)
    line = one_line_error(*cli(["inspect", path], capsys)[::2], str(path), repr(key))
    assert "allow_pickle" not in line
    rc, _, err = cli(["leaderboard", path.parent.parent, "--replicates", "10", "--quiet"], capsys)
    one_line_error(rc, err, repr(key))


def test_payload_with_a_builtins_name_outside_the_allowlist_is_refused(tmp_path, marker, capsys):
    arrays = _reference_arrays()
    del arrays["windows_timeline"]
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "|O", "fortran_order": False, "shape": (2,)})
    path = _write_npz(tmp_path / "exp" / "window_0" / "predictions_validate_all.npz", arrays,
                      {"windows_timeline": header.getvalue() + _raw_pickle_global("builtins", "open", marker)})
    one_line_error(*cli(["inspect", path], capsys)[::2], "builtins.open", "never loads")


def test_payload_in_genshift_npz_is_refused(tmp_path, marker, capsys):
    run = _plant_genshift_npz(tmp_path, marker)
    one_line_error(*cli(["inspect", run / "window_0" / "predictions.npz"], capsys)[::2], "'fused_scores'",
                   "never unpickles")
    one_line_error(*cli(["leaderboard", run, "--replicates", "10", "--quiet"], capsys)[::2], "'fused_scores'")
    loc = _write_npz(tmp_path / "loc" / "window_0" / "localization.npz", {"maps_u8": np.zeros(4, np.uint8),
                                                               "masks_packed": np.zeros(1, np.uint8),
                                                               "shapes": _objects(Payload(marker))})
    one_line_error(*cli(["inspect", loc], capsys)[::2], "'shapes'", "never unpickles")


def test_payload_in_json_files_is_refused(tmp_path, marker, capsys):
    """run.json, checkpoint metadata and cache metadata are JSON: a pickle there is only unreadable JSON."""
    from benchmark.array_store import Field, make_spec, open_store
    from benchmark.source_records import load_scan
    from protocols.rundir import RunDir, RunDirError

    blob = pickle.dumps(Payload(marker))
    run = fabricate_run(tmp_path / "runs" / "r", fabricate_eval_set(60, 2, per_window=2), n_done=1)
    (run / "run.json").write_bytes(blob)
    one_line_error(*cli(["leaderboard", run, "--quiet"], capsys)[::2], "run.json")
    with pytest.raises(RunDirError, match="unreadable"):
        RunDir(run).read_run_json()
    store = tmp_path / "cache" / "eval" / "x"
    store.mkdir(parents=True)
    (store / "meta.json").write_bytes(blob)
    spec = make_spec("eval", {"k": 1}, 4, {"x": Field("uint8", (3,))})
    assert open_store(store, spec) is None  # announced as corrupt and rebuilt, never trusted
    assert not store.exists()
    manifest = tmp_path / "cache" / "manifests" / "folder-x.json"
    manifest.parent.mkdir(parents=True)
    manifest.write_bytes(blob)
    manifest.with_suffix(".scan.json").write_bytes(blob)
    assert load_scan(manifest, tmp_path) is None


def test_payload_in_cached_array_is_refused(tmp_path, marker, capsys):
    """A store chunk replaced by a pickled object array (its record and meta.json rewritten to match) is refused
    by the warm-start check and deleted; the reader never unpickles (it reads raw rows of the run's dtype)."""
    import hashlib

    from benchmark.array_store import CHUNKS, META, Field, StoreWriter, make_spec, open_store

    store = tmp_path / "cache" / "eval" / "x"
    spec = make_spec("eval", {"k": 1}, 4, {"x": Field("uint8", (3,))}, chunk_bytes=6)
    w = StoreWriter(store, spec)
    for c in range(spec.n_chunks):
        a, b = spec.chunk_items(c)
        w.write_chunk(c, {"x": np.full((b - a, 3), c, np.uint8)})
    assert w.finalize() and open_store(store, spec, verify="full") is not None
    planted = store / CHUNKS / "000000.x.npy"
    np.save(planted, _objects(Payload(marker)), allow_pickle=True)
    data = planted.read_bytes()
    meta = json.loads((store / META).read_text())
    meta["chunks"][0]["fields"]["x"].update(bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
    (store / META).write_text(json.dumps(meta))
    for verify in ("fast", "full"):
        assert open_store(store, spec, verify=verify) is None
    assert "does not start with its recorded header" in capsys.readouterr().err
    assert not planted.exists()  # deleted: the next build rebuilds that chunk


def test_payload_in_weights_checkpoint_and_train_state_is_refused(tmp_path, tiny, marker, capsys):
    import torch

    from detectors import create_detector
    from detectors.checkpoint import (
        CheckpointError,
        load_checkpoint,
        load_detector_from_checkpoint,
        save_checkpoint,
    )
    from protocols.resume import load_train_state

    evil = tmp_path / "evil.pt"
    torch.save({"conv.weight": Payload(marker)}, evil)
    line = one_line_error(*cli(["run", *tiny, "--pretrained", evil, "--runs-dir", tmp_path / "runs"], capsys)[::2],
                          str(evil), "Python objects")
    assert "weights_only=False" not in line
    det = create_detector("smallcnn_tune", pretrained="none")
    wdir = tmp_path / "w"
    save_checkpoint(det, wdir, {"training_complete": True})
    shutil.copy(evil, wdir / "checkpoint.safetensors")  # a pickle where safetensors belongs
    with pytest.raises(CheckpointError):
        load_checkpoint(det, wdir)
    with pytest.raises(CheckpointError):
        load_detector_from_checkpoint(wdir)
    state = wdir / "train_state.pt"
    torch.save({"format": 1, "identity": {"window": 0}, "model": Payload(marker)}, state)
    assert load_train_state(state, {"window": 0}) is None  # unreadable: moved aside, the window starts afresh
    assert not state.exists() and list(wdir.glob("train_state.pt.stale-*"))


YAML_PAYLOAD = "!!python/object/apply:builtins.open [{marker}, w]"


@pytest.mark.parametrize("kind", ["config file", "--set value", "timeline", "slurm profile"])
def test_python_tags_in_yaml_are_refused(kind, tmp_path, marker, capsys):
    payload = YAML_PAYLOAD.format(marker=marker)
    runs = tmp_path / "runs"
    argv = ["run", *SMOKE, "--runs-dir", runs, "--cache-dir", tmp_path / "cache"]
    if kind == "config file":
        (tmp_path / "c.yaml").write_text(f"train:\n  lr: {payload}\n")
        argv += ["--config", tmp_path / "c.yaml"]
    elif kind == "--set value":
        argv += ["--set", f"train.lr={payload}"]
    elif kind == "timeline":
        root = write_folder_dataset(tmp_path / "data", {"GanA": "2018-01-01"})
        (root / "timeline.yaml").write_text(f"GanA: {payload}\n")
        argv += ["--dataset", f"folder:{root}"]
    else:
        (tmp_path / "p.yaml").write_text(f"partition: {payload}\n")
        argv += ["--slurm", "--dry-run", "--slurm-profile", tmp_path / "p.yaml"]
    one_line_error(*cli(argv, capsys)[::2], "python/object/apply:builtins.open")
    assert not (runs / "synthetic-smoke__smallcnn_tune__cumulative__seed0" / "run.json").exists()


# ------------------------------------------------------------- 2. the config: typed, checked, before anything

# (--set or flag arguments, the key the one-line error names, what it says is allowed)
BAD_CONFIGS = [
    (["--set", "train.batch_size=abc"], "train.batch_size = 'abc'", "an integer >= 1"),
    (["--set", "train.batch_size=0"], "train.batch_size = 0", "an integer >= 1"),
    (["--set", "eval.batch_size=-1"], "eval.batch_size = -1", "an integer >= 1"),
    (["--set", "train.augmentation_factor=0"], "train.augmentation_factor = 0", ">= 1"),
    (["--set", "train.epochs=-1"], "train.epochs = -1", ">= 1"),
    (["--seed", "-5"], "seed = -5", ">= 0"),
    (["--benchmark-type", "cumulativ"], "benchmark.type = 'cumulativ'", "cumulative"),
    (["--set", "train.lr=fast"], "train.lr = 'fast'", "a number > 0"),
    (["--set", "train.lr=0"], "train.lr = 0", "a number > 0"),
    (["--set", "train.optimizer=sgdd"], "train.optimizer = 'sgdd'", "did you mean sgd"),
    (["--set", "degradation.profile=aigenbench"], "degradation.profile", "aigenbench-v1, fixed"),
    (["--set", "eval.input=five_cro"], "eval.input = 'five_cro'", "five_crop"),
    (["--set", "loggers=[csv,slack]"], "loggers", "slack"),
    (["--set", "cache.eval_inputs=maybe"], "cache.eval_inputs = 'maybe'", "true or false"),
    (["--set", "train.lrr=1"], "'lrr'", "did you mean train.lr"),
    (["--experiment", "../x"], "experiment = '../x'", "one directory name"),
    (["--experiment", "."], "experiment = '.'", "one directory name"),
    (["--dataset", "nosuch:x"], "dataset = 'nosuch:x'", "csv:"),
]


@pytest.mark.parametrize("args,key,allowed", BAD_CONFIGS, ids=[" ".join(c[0]) for c in BAD_CONFIGS])
def test_bad_value_is_one_line_before_anything_is_touched(args, key, allowed, tmp_path, capsys):
    runs, cache = tmp_path / "runs", tmp_path / "cache"
    one_line_error(*cli(["run", *SMOKE, "--runs-dir", runs, "--cache-dir", cache, *args], capsys)[::2], key,
                   allowed)
    assert not runs.exists() and not cache.exists()  # no run directory, no dataset, no model


def test_force_new_with_a_dot_experiment_moves_nothing(tmp_path, capsys):
    runs = tmp_path / "runs"
    (runs / "other").mkdir(parents=True)
    one_line_error(*cli(["run", *SMOKE, "--runs-dir", runs, "--experiment", ".", "--force-new"], capsys)[::2],
                   "experiment")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs"] and (runs / "other").is_dir()


def test_run_directory_leading_out_of_runs_dir_is_refused(tmp_path, tiny, capsys):
    (tmp_path / "runs").mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "runs" / "exp").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    one_line_error(*cli(["run", *tiny, "--runs-dir", tmp_path / "runs", "--experiment", "exp"], capsys)[::2],
                   "outside runs_dir")
    assert not list((tmp_path / "elsewhere").iterdir())


def test_values_are_coerced_to_the_type_of_their_default(tmp_path):
    from protocols.config import parse_override, resolve_config

    layer = tmp_path / "mine.yaml"
    layer.write_text("train:\n  lr: 1e-3\n  weight_decay: 5e-5\n")  # YAML 1.1 reads these as strings
    cfg = resolve_config("smoke", files=[layer], overrides=[parse_override(o) for o in (
        "train.batch_size='32'", "train.epochs=2.0", "data.check=yes", "loggers=csv", "eval.batch_size=64")])
    t = cfg["train"]
    assert (t["lr"], t["weight_decay"], t["batch_size"], t["epochs"]) == (0.001, 5e-5, 32, 2)
    assert type(t["lr"]) is float and type(t["batch_size"]) is int and type(t["epochs"]) is int
    assert cfg["data"]["check"] is True and cfg["loggers"] == ["csv"]
    assert resolve_config("smoke", overrides=[parse_override("train.lr=1e-3")])["train"]["lr"] == 0.001


def test_duplicate_keys_in_a_config_file_are_refused(tmp_path, capsys):
    layer = tmp_path / "mine.yaml"
    layer.write_text("train:\n  lr: 0.1\n  epochs: 2\n  lr: 0.2\n")
    one_line_error(*cli(["run", *SMOKE, "--config", layer, "--runs-dir", tmp_path / "runs"], capsys)[::2],
                   str(layer), "line 4", "'lr' twice")


def test_schema_choices_match_their_owners():
    """The schema keeps other modules' value lists literally (validation imports nothing heavy): they agree."""
    from benchmark.degradations import PROFILES
    from benchmark.images import EVAL_INPUT_STRATEGIES
    from benchmark.reference_train_augment import NAME as REFERENCE_AUGMENTATION
    from benchmark.train_augment import TRAIN_AUGMENTATIONS
    from protocols import config_schema as S
    from protocols.loggers import KNOWN
    from protocols.pipeline import NORMALIZE_CHOICES, PIPELINES
    from protocols.speed import PRECISIONS

    assert S.DEGRADATION_PROFILES == PROFILES and S.TRAIN_AUGMENTATIONS == (*TRAIN_AUGMENTATIONS, REFERENCE_AUGMENTATION)
    assert S.EVAL_PIPELINES == PIPELINES and S.EVAL_NORMALIZATIONS == NORMALIZE_CHOICES
    assert S.EVAL_INPUTS == EVAL_INPUT_STRATEGIES and S.LOGGERS == KNOWN and S.PRECISIONS == PRECISIONS
    from benchmark.sequences import AGGREGATES
    from benchmark.sequences import PROFILES as SEQUENCE_PROFILES
    from benchmark.windows_plan import REAL_SAMPLINGS

    assert S.SEQUENCE_PROFILES == tuple(sorted(SEQUENCE_PROFILES)) and S.SEQUENCE_AGGREGATES == AGGREGATES
    assert S.REAL_SAMPLINGS == REAL_SAMPLINGS
    from benchmark.array_store import VERIFY_MODES
    from protocols.config_enums import CacheTrainInputs

    assert S.CACHE_TRAIN_INPUTS == tuple(CacheTrainInputs) and S.CACHE_VERIFY_MODES == VERIFY_MODES


def test_every_default_fits_the_schema_and_only_operational_keys_leave_the_hash():
    from protocols.config import CONFIG_DIR, RUNTIME_KEYS, _read_yaml, config_hash, resolve_config
    from protocols.config_schema import SCHEMA, key_spec, validate

    base = _read_yaml(CONFIG_DIR / "base.yaml")
    validate(json.loads(json.dumps(base)), base)
    leaves = []

    def walk(d, prefix=""):
        for k, v in d.items():
            walk(v, f"{prefix}{k}.") if isinstance(v, dict) else leaves.append(prefix + k)

    walk(base)
    assert not set(k for k in SCHEMA if not k.endswith(".*")) - set(leaves), "schema keys missing from base.yaml"
    cfg = resolve_config("smoke")
    for key in leaves:
        other = json.loads(json.dumps(cfg))
        *parents, last = key.split(".")
        cur = other
        for p in parents:
            cur = cur[p]
        cur[last] = "changed"
        changed = config_hash(other) != config_hash(cfg)
        assert changed != key_spec(key).operational if key_spec(key) else changed, key
    assert "eval.batch_size" in RUNTIME_KEYS and "train.num_workers" in RUNTIME_KEYS and "cache" in RUNTIME_KEYS


# ------------------------------------------------------------------- 3. no trained window lost: the defects

@pytest.fixture(scope="module")
def lr_run(tmp_path_factory, tiny):
    """A two-window run made with `--set train.lr=1e-3` (YAML 1.1 reads 1e-3 as a string)."""
    runs = tmp_path_factory.mktemp("lr-runs")
    argv = ["run", *tiny, "--runs-dir", str(runs), "--experiment", "e"]
    rc = main([*argv, "--set", "train.lr=1e-3"])
    return runs / "e", argv, rc


def test_lr_written_1e_3_trains_and_the_corrected_command_resumes_the_same_run(lr_run, capsys):
    """Defect 2: `--set train.lr=1e-3` crashed at window 1, and the string it left in run.json made the corrected
    command a 'different configuration'."""
    run, argv, rc = lr_run
    assert rc == 0
    assert json.loads((run / "run.json").read_text())["config"]["train"]["lr"] == 0.001
    rc, out, err = cli([*argv, "--set", "train.lr=0.001"], capsys)
    assert rc == 0 and "all 2 window(s) done" in out, err


def test_identical_runs_write_identical_predictions_with_their_identity(lr_run, tmp_path, tiny, capsys):
    """predictions.npz carries the run identity (deterministic): the same config gives byte-identical files, in
    any run directory; run.json's run_id stays a random id of the directory's lifetime."""
    run, _, _ = lr_run
    rc, _, err = cli(["run", *tiny, "--set", "train.lr=0.001", "--runs-dir", tmp_path, "--experiment", "again"],
                     capsys)
    assert rc == 0, err
    for k in (0, 1):
        a, b = run / f"window_{k}" / "predictions.npz", tmp_path / "again" / f"window_{k}" / "predictions.npz"
        assert a.read_bytes() == b.read_bytes()
    info, again = json.loads((run / "run.json").read_text()), json.loads((tmp_path / "again" / "run.json").read_text())
    with np.load(run / "window_1" / "predictions.npz") as z:
        assert str(z["run_identity"]) == info["run_identity"] == again["run_identity"]
        assert str(z["config_hash"]) == info["config_hash"] and int(z["schema_version"]) == SCHEMA_VERSION
    assert info["run_id"] != again["run_id"]


def test_failure_while_scoring_keeps_the_trained_window(tmp_path, tiny, capsys, monkeypatch):
    """Defect 3: a scoring failure after training must not cost the window: the re-run (with an operational key
    changed, e.g. a smaller eval batch) restores its weights and scores it again."""
    import protocols.engine as engine

    real = engine.score_batches

    def failing(module, loader, precision, device, progress=False, label="scoring", *more):
        if "window 2/2" in label:
            raise RuntimeError("simulated failure while scoring (out of memory)")
        return real(module, loader, precision, device, progress, label, *more)

    argv = ["run", *tiny, "--runs-dir", tmp_path / "runs", "--experiment", "e"]
    monkeypatch.setattr(engine, "score_batches", failing)
    with pytest.raises(RuntimeError, match="simulated failure"):
        main([str(a) for a in argv])
    w1 = tmp_path / "runs" / "e" / "window_1"
    assert not (w1 / "done").exists() and (w1 / "checkpoint.safetensors").is_file()
    weights = (w1 / "checkpoint.safetensors").read_bytes()
    monkeypatch.setattr(engine, "score_batches", real)
    capsys.readouterr()
    rc, out, err = cli([*argv, "--set", "eval.batch_size=7", "--set", "train.num_workers=1"], capsys)
    assert rc == 0, err
    assert "window 2/2: training already finished, weights restored" in out
    assert (w1 / "done").is_file() and (w1 / "checkpoint.safetensors").read_bytes() == weights


def _identity_run(path: Path, es: dict, identity: str, n_done: int = 2) -> Path:
    run = fabricate_run(path, es, n_done=n_done, seed=len(identity))
    info = json.loads((run / "run.json").read_text()) | {"run_identity": identity, "config_hash": "h" + identity}
    (run / "run.json").write_text(json.dumps(info))
    for k in range(n_done):
        npz = run / f"window_{k}" / "predictions.npz"
        with np.load(npz) as z:
            arrays = {key: z[key] for key in z.files}
        np.savez(npz, **arrays, run_identity=np.array(identity), config_hash=np.array("h" + identity))
    return run


def test_leaderboard_refuses_a_window_copied_from_another_run(tmp_path, capsys):
    es = fabricate_eval_set(120, 2, per_window=2)
    a, b = _identity_run(tmp_path / "runs" / "a", es, "aaaa"), _identity_run(tmp_path / "runs" / "b", es, "bbbb")
    assert cli(["leaderboard", a, b, "--replicates", "10", "--quiet"], capsys)[0] == 0
    shutil.copy(b / "window_1" / "predictions.npz", a / "window_1" / "predictions.npz")
    one_line_error(*cli(["leaderboard", a, "--replicates", "10", "--quiet"], capsys)[::2],
                   "window_1/predictions.npz", "another run", "bbbb", "aaaa")
    legacy = fabricate_run(tmp_path / "runs" / "legacy", es, n_done=2)  # before identities: still readable
    assert cli(["leaderboard", legacy, "--replicates", "10", "--quiet"], capsys)[0] == 0


# ---------------------------------------------------------------------------- 4. data sources and the check

def _bomb_png() -> bytes:
    """A 100000×100000 PNG header: Pillow refuses it as a decompression bomb before decoding anything."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", 100000, 100000, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0")) + chunk(b"IEND", b"")


def _folder(tmp_path) -> Path:
    return write_folder_dataset(tmp_path / "data", {"GanA": "2018-01-01", "GanB": "2019-01-01"})


def _data_check(spec, tmp_path, capsys, *extra) -> tuple[int, str, str]:
    return cli(["data", "check", spec, "--cache-dir", tmp_path / "cache", "--no-progress", "--workers", "1",
                *extra], capsys)


# (what, how to spoil a folder dataset, argv after `genshift`, what the one-line error names)
def _dup_timeline(root):
    (root / "timeline.yaml").write_text("GanA: 2018-01-01\nGanB: 2019-01-01\nGanA: 2020-01-01\n")


def _bad_date(root):
    (root / "timeline.yaml").write_text("GanA: 2020-13-45\nGanB: 2019-01-01\n")


ONE_LINE_DATA_CASES = {
    "duplicate generator in the timeline": (_dup_timeline, "folder:{root}", ["'GanA' twice", "line 3"]),
    "impossible date": (_bad_date, "folder:{root}", ["timeline.yaml", "generator 'GanA'", "'2020-13-45'"]),
    "missing folder": (None, "folder:{root}/nope", ["no such directory", "nope"]),
    "missing csv": (None, "csv:{root}/nope.csv", ["no such file", "nope.csv"]),
}


@pytest.mark.parametrize("case", list(ONE_LINE_DATA_CASES))
def test_data_mistakes_are_one_line(case, tmp_path, capsys):
    spoil, spec, needles = ONE_LINE_DATA_CASES[case]
    root = _folder(tmp_path)
    if spoil:
        spoil(root)
    spec = spec.format(root=root)
    one_line_error(*_data_check(spec, tmp_path, capsys)[::2], *needles)
    one_line_error(*cli(["run", *SMOKE, "--dataset", spec, "--runs-dir", tmp_path / "runs", "--cache-dir",
                         tmp_path / "cache"], capsys)[::2], *needles)


@pytest.mark.parametrize("argv,needles", [
    (["--position", "-1"], ["--position", ">= 0"]),
    (["--position", "0"], ["decompression bomb"]),
    (["--position", "0", "--base-seed", str(2**31)], ["below 2^31"]),
])
def test_data_degrade_refuses_in_one_line(argv, needles, tmp_path, capsys):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_bomb_png())
    one_line_error(*cli(["data", "degrade", bomb, "--out", tmp_path / "o", *argv], capsys)[::2], *needles)


def test_symlinks_one_policy(tmp_path, capsys):
    """Links inside the dataset root are followed (a linked generator folder keeps its images); a file or folder
    leading outside it is an outside_root error naming it, never read, never silently skipped."""
    root = _folder(tmp_path)
    shared = root / "shared" / "GanB"
    shutil.move(root / "train" / "GanB", shared)
    (root / "train" / "GanB").symlink_to(shared, target_is_directory=True)
    rc, out, _ = _data_check(f"folder:{root}", tmp_path, capsys)
    assert rc == 0 and "GanB" in out  # the linked folder's images are there
    secret = tmp_path / "secret.txt"
    secret.write_text("SECRET-CONTENT-1234")
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "x.png").write_bytes(png_bytes(make_image(1, 1)))
    (root / "train" / "GanA" / "leak.png").symlink_to(secret)
    (root / "eval" / "GanB2").symlink_to(outside, target_is_directory=True)
    rc, out, err = _data_check(f"folder:{root}", tmp_path, capsys, "--json")
    report = json.loads(out)
    kinds = {(p["kind"], p["path"]) for p in report["problems"] if p["severity"] == "error"}
    assert ("outside_root", "train/GanA/leak.png") in kinds and ("outside_root", "eval/GanB2") in kinds
    assert rc == 1 and "SECRET" not in out + err


def test_no_file_bytes_are_echoed(tmp_path, capsys):
    """A file that is no image is described by its size, never by its first bytes; a CSV row naming a file
    outside the dataset root (absolute, `..`, or through a link) is refused without reading it."""
    root = tmp_path / "data"
    write_folder_dataset(root, {"GanA": "2018-01-01"})
    (root / "train" / "real" / "notes.png").write_text("PRIVATE-KEY-MATERIAL")
    rc, out, err = _data_check(f"folder:{root}", tmp_path, capsys)
    assert rc == 1 and "not an image" in out and "(20 bytes)" in out and "PRIVATE" not in out + err
    secret = tmp_path / "secret.png"
    secret.write_text("PRIVATE-KEY-MATERIAL")
    lines = [f"{p},{0 if p.parent.name == 'real' else 1},"
             f"{'' if p.parent.name == 'real' else p.parent.name},{p.parts[-3]}"
             for p in sorted(root.rglob("*.png")) if p.name != "notes.png"]
    csv = root / "data.csv"
    csv.write_text("\n".join(["path,label,generator,split", *lines, f"{secret},0,,train", "../secret.png,0,,train",
                               ""]))
    rc, out, err = _data_check(f"csv:{csv}", tmp_path, capsys)
    assert rc == 1 and out.count("[outside_root]") == 2 and "PRIVATE" not in out + err
    rc, out, err = _data_check(f"csv:{csv}?root={tmp_path}", tmp_path, capsys)  # a wider root: read, not echoed
    assert out.count("[outside_root]") == 1 and "secret.png: not an image" in out and "PRIVATE" not in out + err


def test_same_bytes_labelled_real_and_fake_is_an_error(tmp_path, capsys):
    root = _folder(tmp_path)
    shutil.copy(root / "train" / "GanA" / "000.png", root / "train" / "real" / "copy.png")
    rc, out, _ = _data_check(f"folder:{root}", tmp_path, capsys)
    assert rc == 1 and "label_conflict: 2" in out and "labelled real" in out


def _bmp_folder(root: Path) -> Path:
    """A folder dataset of 64×64 BMPs: every image file has the same size, so one can replace another in place."""
    from PIL import Image

    for split, seed in (("train", 0), ("eval", 100)):
        for cls, label in (("real", 0), ("GanA", 1)):
            for j in range(2):
                path = root / split / cls / f"{j}.bmp"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(make_image(seed + 10 * label + j, label, size=(64, 64))).save(path)
    (root / "timeline.yaml").write_text("GanA: 2018-01-01\n")
    return root


def test_file_swapped_with_size_and_mtime_kept_is_found(tmp_path, capsys):
    """The scan cache trusted size and mtime: a train image copied over an eval image (size and mtime restored)
    hid the leak. ctime and inode are part of the stamp now, so the file is hashed again."""
    root = _bmp_folder(tmp_path / "data")
    assert _data_check(f"folder:{root}", tmp_path, capsys)[0] == 0
    victim, leak = root / "eval" / "real" / "0.bmp", root / "train" / "real" / "0.bmp"
    st = victim.stat()
    assert leak.stat().st_size == st.st_size
    with open(victim, "r+b") as f:  # in place: same inode
        f.write(leak.read_bytes())
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (victim.stat().st_size, victim.stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    rc, out, _ = _data_check(f"folder:{root}", tmp_path, capsys)
    assert rc == 1 and "ERROR duplicate: 1" in out


def test_recheck_trusts_no_cached_result(tmp_path, capsys):
    root = _bmp_folder(tmp_path / "data")
    (root / "train" / "real" / "0.bmp").write_bytes((root / "eval" / "real" / "0.bmp").read_bytes())  # a leak
    assert _data_check(f"folder:{root}", tmp_path, capsys)[0] == 1
    for cached in (tmp_path / "cache" / "checks").glob("*.json"):  # a stale or tampered verdict: "all fine"
        cached.write_text(json.dumps(json.loads(cached.read_text()) | {"problems": []}))
    assert _data_check(f"folder:{root}", tmp_path, capsys)[0] == 0  # the cache is trusted...
    rc, out, _ = _data_check(f"folder:{root}", tmp_path, capsys, "--recheck")
    assert rc == 1 and "ERROR duplicate: 1" in out  # ...until --recheck


# --------------------------------------------------------------------------- 5. reading and writing results

@pytest.mark.parametrize("content", [b"", b"just text\n", b"\x93NUMPY\x01\x00", pickle.dumps({"a": 1})],
                         ids=["empty", "text", "npy", "pickle"])
def test_inspect_on_a_file_that_is_not_an_npz(content, tmp_path, capsys):
    path = tmp_path / "window_0" / "predictions.npz"
    path.parent.mkdir()
    path.write_bytes(content)
    line = one_line_error(*cli(["inspect", path], capsys)[::2], str(path))
    assert "allow_pickle" not in line and ("empty file" in line or "not an .npz archive" in line)


def test_latex_output_is_fully_escaped(tmp_path, capsys):
    es = fabricate_eval_set(120, 2, per_window=2)
    run = fabricate_run(tmp_path / "runs" / "x\\input{evil}_100%", es, detector="a&b^c~d_tune")
    assert cli(["leaderboard", run, "--out", tmp_path / "lb", "--replicates", "10", "--quiet"], capsys)[0] == 0
    tex = (tmp_path / "lb" / "leaderboard.tex").read_text()
    assert r"x\textbackslash{}input\{evil\}\_100\%" in tex and r"a\&b\textasciicircum{}c\textasciitilde{}d" in tex
    assert "\\input{" not in tex


def test_leaderboard_output_defaults(tmp_path, capsys, monkeypatch):
    es = fabricate_eval_set(120, 2, per_window=2)
    a = fabricate_run(tmp_path / "one" / "runs" / "a", es)
    b = fabricate_run(tmp_path / "one" / "runs" / "b", es, seed=1)
    c = fabricate_run(tmp_path / "two" / "c", es, seed=2)
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    assert cli(["leaderboard", a, b, "--replicates", "10", "--quiet"], capsys)[0] == 0
    assert (tmp_path / "one" / "runs" / "leaderboard.md").is_file()  # the runs directory they share
    assert cli(["leaderboard", a, c, "--replicates", "10", "--quiet"], capsys)[0] == 0
    assert (here / "leaderboard.md").is_file() and not (tmp_path / "leaderboard.md").exists()


class SmallDisk:
    """Directories on real tmpfs mounts of a given size (a full or read-only disk); `mount` returns None where this
    process may not mount (not root): the caller then injects the same errno at the atomic write instead."""

    def __init__(self, base: Path):
        self.base, self.mounted = base, []

    def _mount(self, target: Path, opts: str) -> bool:
        cmd = ["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(target)]
        return subprocess.run(cmd, capture_output=True).returncode == 0

    def mount(self, size: str, read_only: bool = False) -> Path | None:
        target = self.base / f"fs{len(self.mounted)}"
        target.mkdir(parents=True)
        if not shutil.which("mount") or not self._mount(target, f"size={size}" + (",ro" if read_only else "")):
            return None
        self.mounted.append(target)
        return target

    def grow(self, target: Path, size: str) -> None:
        assert self._mount(target, f"remount,size={size}")

    def release(self) -> None:
        for target in self.mounted:
            subprocess.run(["umount", "-l", str(target)], capture_output=True)


@pytest.fixture
def small_disk(tmp_path):
    disk = SmallDisk(tmp_path / "mnt")
    yield disk
    disk.release()


@pytest.mark.parametrize("fault", ["ENOSPC", "EROFS"])
def test_full_and_read_only_disks_are_one_line_and_lose_nothing(fault, tmp_path, small_disk, monkeypatch, capsys):
    es = fabricate_eval_set(2000, 2, per_window=2)
    run = fabricate_run(tmp_path / "runs" / "a", es)
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    out = small_disk.mount("64k", read_only=fault == "EROFS")
    if out is None:
        out = tmp_path / "out"
        monkeypatch.setenv("GENSHIFT_WRITE_FAULT", fault)
    words = "the disk is full" if fault == "ENOSPC" else "the file system is read-only"
    one_line_error(*cli(["leaderboard", run, "--out", out, "--replicates", "10", "--quiet"], capsys)[::2],
                   "cannot write", str(out), words)
    one_line_error(*cli(["inspect", run / "window_0" / "predictions.npz", "--csv", out / "rows.csv"], capsys)[::2],
                   words)
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


def test_run_on_a_full_disk_is_one_line_then_resumes(tmp_path, tiny, small_disk, monkeypatch, capsys):
    runs = small_disk.mount("200k")
    if runs is None:
        runs = tmp_path / "runs"
        monkeypatch.setenv("GENSHIFT_WRITE_FAULT", "ENOSPC:train_state")
    argv = ["run", *tiny, "--set", "train.checkpoint_every_n_steps=1", "--set", "train.batch_size=4", "--runs-dir",
            runs, "--experiment", "e"]
    one_line_error(*cli(argv, capsys)[::2], "cannot write", "the disk is full", "run the same command again")
    if small_disk.mounted:
        small_disk.grow(runs, "8m")
    monkeypatch.delenv("GENSHIFT_WRITE_FAULT", raising=False)
    rc, out, err = cli(argv, capsys)
    assert rc == 0 and "all 2 window(s) done" in out, err


def test_bad_weight_files_are_one_line(tmp_path, tiny, capsys):
    for name, content in (("empty.safetensors", b""), ("garbage.pt", b"not weights at all"),
                          ("garbage.safetensors", b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")):
        path = tmp_path / name
        path.write_bytes(content)
        line = one_line_error(*cli(["run", *tiny, "--pretrained", path, "--runs-dir", tmp_path / "runs"],
                                   capsys)[::2], str(path))
        assert "weights_only" not in line


# ------------------------------------------------------------------------------------------- 6. the CLI text

def test_run_help_lists_the_source_kinds(capsys):
    rc, out, _ = cli(["run", "--help"], capsys)
    assert rc == 0 and "more sources to come" not in out
    for kind in ("synthetic", "aigenbench:PATH", "folder:ROOT", "csv:FILE"):
        assert kind in out


def test_slurm_without_gpus_names_the_cpu_profile(tmp_path, capsys, monkeypatch):
    fake = tmp_path / "bin" / "sbatch"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho 'sbatch: error: Invalid generic resource (gres) specification' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.chdir(tmp_path)
    one_line_error(*cli(["run", *SMOKE, "--runs-dir", tmp_path / "runs", "--slurm"], capsys)[::2],
                   "Invalid generic resource", "--slurm-profile cpu")
