"""The `folder:` and `csv:` sources: layout, ids, timeline lookup and loud per-row errors."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from helpers import write_csv_dataset, write_folder_dataset

from benchmark.eval_plan import make_eval_plan
from benchmark.images import load_rgb
from benchmark.imagestore import read_image
from benchmark.manifest import sha256_file
from benchmark.sources import SourceError, load_source
from benchmark.timeline import generator_id_to_name, make_windows

GENS = {"GanA": "2018-01-01", "GanB": "2018-01-01", "DiffC": "2020-05-01", "DiffD": "2021-02-03",
        "FlowE": "2022-07-07"}


def test_folder_source(tmp_path):
    root = write_folder_dataset(tmp_path / "mine", GENS)
    m = load_source(f"folder:{root}", tmp_path / "cache", progress=False)
    assert m.timeline.keys() == GENS.keys()
    # same-date generators join the window without counting towards its size (reference)
    assert make_windows(m.timeline, 2) == [["GanA", "GanB", "DiffC"], ["DiffD", "FlowE"]]
    train = m.split("train")
    # id = index in the split sorted by relative path
    paths = sorted(p.relative_to(root / "train").as_posix() for p in (root / "train").rglob("*.png"))
    assert [s.path for s in train] == [f"train/{p}" for p in paths]
    assert [s.id for s in train] == list(range(len(paths)))
    for s in train[:3] + m.split("eval")[-2:]:
        assert s.sha256 == sha256_file(root / s.path)
        assert s.label == (0 if s.path.split("/")[1] == "real" else 1)
        np.testing.assert_array_equal(read_image(m.root, s.path), load_rgb(root / s.path))
    plan = make_eval_plan(m.split("eval"), generator_id_to_name(m.timeline))
    assert Counter(plan.pairing[plan.labels == 0].tolist()) == Counter(plan.generator_ids[plan.labels == 1].tolist())


def test_folder_masks_validation_alias_and_timeline_option(tmp_path):
    root = write_folder_dataset(tmp_path / "mine", {"GanA": "2018-01-01"})
    (root / "eval").rename(root / "validation")
    (root / "masks" / "train" / "GanA").mkdir(parents=True)
    shutil.copy(root / "train" / "GanA" / "000.png", root / "masks" / "train" / "GanA" / "000.png")
    tl = tmp_path / "other.yaml"
    tl.write_text("GanA: 2019-01-01\nUnused: 2020-01-01\n")
    m = load_source(f"folder:{root}?timeline={tl}", tmp_path / "cache", progress=False)
    assert str(m.timeline["GanA"]) == "2019-01-01" and "Unused" not in m.timeline
    assert any("Unused" in n for n in m.extra["notes"])
    assert {s.path: s.mask for s in m.split("train") if s.mask} == {"train/GanA/000.png": "masks/train/GanA/000.png"}
    assert len(m.split("eval")) == 2


def test_folder_errors_name_the_problem(tmp_path):
    root = write_folder_dataset(tmp_path / "mine", {"GanA": "2018-01-01"})
    (root / "timeline.yaml").unlink()
    with pytest.raises(SourceError, match="timeline.yaml"):
        load_source(f"folder:{root}", tmp_path / "c", progress=False)
    (root / "timeline.yaml").write_text("GanA: 2018-01-01\n")
    shutil.copytree(root / "train" / "GanA", root / "train" / "Undated")
    with pytest.raises(SourceError, match=r"train/Undated/000.png.*'Undated' has no release date"):
        load_source(f"folder:{root}", tmp_path / "c", progress=False)
    with pytest.raises(SourceError, match="expected sub-folders train/ and eval/"):
        load_source(f"folder:{root / 'train'}?timeline={root / 'timeline.yaml'}", tmp_path / "c", progress=False)


def test_csv_source(tmp_path):
    csv = write_csv_dataset(tmp_path / "mine", GENS)
    m = load_source(f"csv:{csv}", tmp_path / "cache", progress=False)
    assert make_windows(m.timeline, 3) == [["GanA", "GanB", "DiffC", "DiffD"], ["FlowE"]]
    lines = csv.read_text().splitlines()[1:]
    train_lines = [ln for ln in lines if ln.endswith(",train")]
    assert [s.id for s in m.split("train")] == list(range(len(train_lines)))
    assert [s.path for s in m.split("train")] == [ln.split(",")[0].strip('"') for ln in train_lines]
    assert Counter(s.generator for s in m.split("eval")) == {"": 5, **{g: 1 for g in GENS}}


def _edit_csv(csv: Path, line_no: int, new: str) -> None:
    lines = csv.read_text().splitlines()
    lines[line_no] = new
    csv.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("row,match", [
    ("img/train_real_000.png,2,,train", r"row 1 \(line 2\): label '2' is not 0 or 1"),
    ("img/train_real_000.png,1,,train", r"row 1 \(line 2\): label 1 \(fake\) needs a generator"),
    ("img/train_real_000.png,1,Nobody,train", r"row 1 \(line 2\): generator 'Nobody' has no release date"),
    ("img/missing.png,0,,train", r"row 1 \(line 2\): image .*missing.png does not exist"),
    ("img/train_real_000.png,0,,test", r"row 1 \(line 2\): split 'test'"),
])
def test_csv_bad_rows_are_named(tmp_path, row, match):
    csv = write_csv_dataset(tmp_path / "mine", {"GanA": "2018-01-01"})
    _edit_csv(csv, 1, row)
    with pytest.raises(SourceError, match=match):
        load_source(f"csv:{csv}", tmp_path / "cache", progress=False)


def test_csv_mask_column_and_header_check(tmp_path):
    csv = write_csv_dataset(tmp_path / "mine", {"GanA": "2018-01-01"})
    lines = csv.read_text().splitlines()
    lines = [lines[0] + ",mask"] + [ln + "," for ln in lines[1:]]
    fake = next(i for i, ln in enumerate(lines) if ",1," in ln)
    lines[fake] = lines[fake] + "img/train_real_000.png"
    csv.write_text("\n".join(lines) + "\n")
    m = load_source(f"csv:{csv}", tmp_path / "cache", progress=False)
    assert [s.mask for s in m.samples if s.mask] == ["img/train_real_000.png"]
    csv.write_text("file,label\nx.png,0\n")
    with pytest.raises(SourceError, match="missing"):
        load_source(f"csv:{csv}", tmp_path / "cache", progress=False)
