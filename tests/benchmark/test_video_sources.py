"""The video track's data side: segmentation profiles, landmark parsing, the landmarks:/videos: sources, the
data check for sequences, frame sampling, and the embedded synthetic-landmarks dataset."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import write_video

from benchmark.datacheck import check_source
from benchmark.sequences import (
    PROFILES,
    SequenceError,
    fuse_scores,
    pack_segment,
    parse_landmarks,
    segment_starts,
)
from benchmark.sources import SourceError, load_source, scan_source


@pytest.mark.parametrize("frames, lrnet_v1, fixed", [
    (25, [], []),  # shorter than one segment
    (30, [], [0]),  # LRNet: range(0, 0, 30) is empty although the video holds a full segment
    (31, [0], [0]),
    (59, [0], [0]),
    (60, [0], [0, 30]),  # LRNet drops the last full segment of a multiple of 30
    (61, [0, 30], [0, 30]),
    (90, [0, 30], [0, 30, 60]),
    (95, [0, 30, 60], [0, 30, 60]),
])
def test_segment_starts_under_both_profiles(frames, lrnet_v1, fixed):
    assert PROFILES["lrnet-v1"].starts(frames) == lrnet_v1 == list(range(0, frames - 30, 30))
    assert PROFILES["fixed"].starts(frames) == fixed
    assert segment_starts(frames, 30, last_segment=True) == fixed


def test_packed_segment_holds_frames_and_float64_differences():
    rng = np.random.default_rng(0)
    frames = np.round(rng.uniform(-1, 1, (64, 136)), 5)
    x = pack_segment(frames, 30, 30)
    assert x.shape == (59, 136) and x.dtype == np.float32
    np.testing.assert_array_equal(x[:30], frames[30:60].astype(np.float32))
    # LRNet: vec_next = vectors[i+1:i+30] padded with a zero row, (vec_next - vec)[:29], in float64, then float32
    vec = frames[30:60]
    vec_next = np.pad(frames[31:60], ((0, 1), (0, 0)))
    np.testing.assert_array_equal(x[30:], (vec_next - vec)[:29].astype(np.float32))


def test_fuse_scores_vote_mean_max_and_videos_without_segments():
    s = np.array([0.2, 0.5, 0.9, 0.4, 0.1])
    v = np.array([0, 0, 0, 2, 2])
    np.testing.assert_allclose(fuse_scores(s, v, 3, "vote"), [2 / 3, np.nan, 0.0])  # >= 0.5 counts as fake
    np.testing.assert_allclose(fuse_scores(s, v, 3, "mean"), [1.6 / 3, np.nan, 0.25])
    np.testing.assert_allclose(fuse_scores(s, v, 3, "max"), [0.9, np.nan, 0.4])


@pytest.mark.parametrize("text, kind", [
    ("", "empty"),
    ("1 2 3\n1 2\n", "ragged"),
    (" ".join(["0.1"] * 134) + "\n", "bad_width"),
    (" ".join(["0.1"] * 135 + ["nan"]) + "\n", "non_finite"),
    (" ".join(["0.1"] * 135 + ["x"]) + "\n", "unreadable"),
])
def test_parse_landmarks_names_the_problem(text, kind):
    with pytest.raises(SequenceError) as e:
        parse_landmarks(text, "f.txt")
    assert e.value.kind == kind and "f.txt" in str(e.value)


def _write(path, frames: int, seed: int = 0, width: int = 136) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    np.savetxt(path, rng.uniform(-1, 1, (frames, width)), fmt="%.5f")


def _layout(root):
    """LRNet's layout: Origin + DF + F2F, raw and c23, train/val/test."""
    for method in ("Origin", "DF", "F2F"):
        for comp in ("raw", "c23"):
            for split, n in (("train", 3), ("val", 1), ("test", 2)):
                for i in range(n):
                    name = f"{i:03d}" if method == "Origin" else f"{i:03d}_{i + 100:03d}"
                    _write(root / method / comp / split / f"{name}.txt", 61 + i, seed=hash((method, comp, split, i))
                           % 2**32)
    return root


def test_landmarks_layout_records_method_compression_split_and_video(tmp_path):
    root = _layout(tmp_path / "lm")
    m = load_source(f"landmarks:{root}", tmp_path / "cache", progress=False)
    assert {s.kind for s in m.samples} == {"landmarks"}
    assert {s.split for s in m.samples} == {"train", "val", "eval"}  # test -> eval, val kept for selection
    assert set(m.timeline) == {"DF", "F2F"}  # the shipped face-manipulation timeline, restricted to the data
    s = next(s for s in m.split("eval") if s.generator == "F2F" and s.compression == "c23")
    assert s.label == 1 and s.video == "000_100" and s.frames == 61 and s.path == "F2F/c23/test/000_100.txt"
    reals = [s for s in m.split("train") if s.label == 0]
    assert len(reals) == 6 and all(s.generator == "" for s in reals)
    ids = [s.id for s in m.split("train")]
    assert ids == list(range(len(ids)))
    # without a timeline (genshift predict) every method is a label only
    scan = scan_source(f"landmarks:{root}", tmp_path / "cache", progress=False, need_timeline=False)
    assert scan.manifest.timeline == {} and not scan.errors


def test_landmarks_csv_form_and_undated_methods(tmp_path):
    root = _layout(tmp_path / "lm")
    rows = ["path,label,method,compression,split", "Origin/raw/train/000.txt,0,Origin,raw,train",
            "DF/raw/train/000_100.txt,1,DF,raw,train", "Origin/raw/test/000.txt,0,,raw,test",
            "DF/raw/test/000_100.txt,1,Mystery,raw,test"]
    (root / "list.csv").write_text("\n".join(rows) + "\n")
    scan = scan_source(f"landmarks:{root / 'list.csv'}", tmp_path / "cache", progress=False)
    assert [p.kind for p in scan.errors] == ["missing_date"] and "Mystery" in scan.errors[0].message
    with pytest.raises(SourceError, match="Mystery"):
        load_source(f"landmarks:{root / 'list.csv'}", tmp_path / "cache", progress=False)
    ok = scan_source(f"landmarks:{root / 'list.csv'}", tmp_path / "cache", progress=False, need_timeline=False)
    assert not ok.errors and {s.generator for s in ok.manifest.samples} == {"", "DF", "Mystery"}


def test_landmarks_csv_with_a_row_of_too_many_fields_names_it(tmp_path):
    """A row with more fields than the header is a bad_row problem (the same rule as the csv: image source)."""
    root = _layout(tmp_path / "lm")
    rows = ["path,label,method,compression,split", "Origin/raw/train/000.txt,0,Origin,raw,train",
            "DF/raw/train/000_100.txt,1,DF,raw,train,extra"]
    (root / "list.csv").write_text("\n".join(rows) + "\n")
    scan = scan_source(f"landmarks:{root / 'list.csv'}", tmp_path / "cache", progress=False, need_timeline=False)
    assert [(p.kind, p.message) for p in scan.errors] == [("bad_row", "list.csv row 2 (line 3): 6 fields, the header "
                                                                      "names 5")]


def test_data_check_names_every_sequence_problem(tmp_path):
    root = tmp_path / "lm"
    good = root / "DF" / "raw" / "train"
    _write(good / "ok.txt", 61, 1)
    _write(root / "Origin" / "raw" / "train" / "real.txt", 61, 2)
    _write(root / "Origin" / "raw" / "test" / "real.txt", 61, 2)  # same bytes as a train file: a leak
    (good / "empty.txt").write_text("")
    (good / "ragged.txt").write_text(" ".join(["0.1"] * 136) + "\n" + " ".join(["0.1"] * 135) + "\n")
    _write(good / "narrow.txt", 40, 3, width=134)
    _write(good / "short.txt", 20, 4)
    _write(good / "exact30.txt", 30, 5)
    nan = np.random.default_rng(6).uniform(-1, 1, (40, 136))
    nan[7, 3] = np.inf
    np.savetxt(good / "nan.txt", nan, fmt="%.5f")
    _write(root / "DF" / "raw" / "test" / "t.txt", 61, 7)
    m = scan_source(f"landmarks:{root}", tmp_path / "cache", progress=False).manifest
    kinds = {}
    for p in check_source(m, tmp_path / "cache", progress=False, profile="lrnet-v1").problems:
        kinds.setdefault(p.kind, []).append(p.path.rsplit("/", 1)[-1])
    assert kinds["empty"] == ["empty.txt"] and kinds["ragged"] == ["ragged.txt"]
    assert kinds["bad_width"] == ["narrow.txt"] and kinds["non_finite"] == ["nan.txt"]
    assert kinds["too_short"] == ["short.txt"] and kinds["no_segment"] == ["exact30.txt"]
    assert kinds["duplicate"] == ["real.txt"]
    fixed = {p.kind for p in check_source(m, tmp_path / "cache", progress=False, profile="fixed").problems}
    assert "no_segment" not in fixed and "too_short" in fixed  # 30 frames make one segment under `fixed`


def test_frame_sampling_and_both_decoders(tmp_path):
    from benchmark.video_frames import count_frames, read_frames, sample_frame_indices

    assert sample_frame_indices(10, every=4) == [0, 4, 8]
    assert sample_frame_indices(10, count=4) == [0, 3, 6, 9]
    assert sample_frame_indices(3, count=8) == [0, 1, 2]
    with pytest.raises(ValueError, match="exactly one"):
        sample_frame_indices(10, every=2, count=3)
    write_video(tmp_path / "v.avi", 17)
    assert count_frames(tmp_path / "v.avi", "pyav") == count_frames(tmp_path / "v.avi", "opencv") == 17
    a = read_frames(tmp_path / "v.avi", [0, 8, 16], "pyav")
    b = read_frames(tmp_path / "v.avi", [0, 8, 16], "opencv")
    assert [f.shape for f in a] == [(40, 48, 3)] * 3
    for fa, fb in zip(a, b, strict=True):  # the same bitstream; colour conversion may differ by a level or two
        assert np.abs(fa.astype(int) - fb.astype(int)).mean() < 3
    assert abs(int(a[1][:, 30:].mean()) - 72) <= 3  # frame 8 has grey level 8 * 9 on its right half


def test_videos_source_and_a_frame_detector(tmp_path):
    from protocols.cli import main

    root = tmp_path / "vids"
    for method, label in (("Origin", 0), ("DF", 1)):
        for i in range(2):
            write_video(root / method / "c23" / "test" / f"{i:03d}.avi", 12 + i, seed=label * 10 + i)
    m = load_source(f"videos:{root}?backend=opencv", tmp_path / "cache", progress=False)
    assert {s.kind for s in m.samples} == {"video"} and {s.frames for s in m.samples} == {12, 13}
    out = tmp_path / "out"
    assert main(["predict", "--detector", "smallcnn_tune", "--pretrained", "none", "--dataset", f"videos:{root}",
                 "--out", str(out), "--cache-dir", str(tmp_path / "cache"), "--no-progress", "--frames-every",
                 "4"]) == 0
    with np.load(out / "predictions.npz") as z:
        a = {k: z[k] for k in z.files}
    assert [str(p) for p in a["fused_paths"]] == ["DF/c23/test/000.avi", "DF/c23/test/001.avi",
                                                  "Origin/c23/test/000.avi", "Origin/c23/test/001.avi"]
    assert np.bincount(a["frame_video"]).tolist() == [3, 4, 3, 4]  # 12 frames: 0, 4, 8; 13 frames: also 12
    assert a["frame_index"].tolist() == [0, 4, 8, 0, 4, 8, 12] * 2
    for r in range(4):  # the video score is the mean of its frames' scores
        assert a["fused_scores"][r] == pytest.approx(a["frame_scores"][a["frame_video"] == r].mean(), abs=1e-6)
    assert (out / "manipulations.csv").is_file() and (out / "roc_DF.png").is_file()


def test_synthetic_landmarks_build_is_deterministic(tmp_path):
    from benchmark.synthetic_landmarks import METHODS, build_synthetic_landmarks

    a = build_synthetic_landmarks(tmp_path / "a", "smoke", seed=3, progress=False)
    b = build_synthetic_landmarks(tmp_path / "b", "smoke", seed=3, progress=False)
    files = sorted(p.relative_to(a) for p in a.rglob("*.txt"))
    assert files == sorted(p.relative_to(b) for p in b.rglob("*.txt"))
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files[::7])
    m = load_source("synthetic-landmarks:smoke@3", tmp_path / "cache", progress=False)
    assert len(m.timeline) == len(METHODS) >= 12
    assert {s.compression for s in m.samples} == {"raw", "c23", "c40"}
    assert {s.split for s in m.samples} == {"train", "val", "eval"}
    report = check_source(m, tmp_path / "cache", progress=False, profile="lrnet-v1")
    assert report.ok, [p.line() for p in report.errors]
