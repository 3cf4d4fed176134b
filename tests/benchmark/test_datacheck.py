"""`genshift data check` finds every planted fault and nothing else; skipping; `data info` / `data degrade`."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import make_image, png_bytes, write_csv_dataset, write_release_dataset

from benchmark.cli import main
from benchmark.datacheck import apply_skips, check_source, check_spec, format_report
from benchmark.degradations import degrade, degrade_float
from benchmark.images import load_rgb
from benchmark.sources import load_source


def _found(report, severity="error"):
    return sorted((p.kind, p.split, p.id) for p in report.problems if p.severity == severity)


@pytest.fixture(scope="module")
def faulty_release(tmp_path_factory):
    root = tmp_path_factory.mktemp("faulty") / "release"
    planted = write_release_dataset(root, generators=["ProGAN", "StarGAN", "CycleGAN"], train_fakes_per_generator=3,
                                    eval_fakes_per_generator=2, faults=["corrupt", "truncated", "tiny", "duplicate",
                                                                        "bad_label", "unknown_generator",
                                                                        "exif_rotated"])
    return root, planted


def test_release_faults_found_and_nothing_else(faulty_release, tmp_path):
    root, planted = faulty_release
    report = check_spec(f"aigenbench:{root}", tmp_path / "cache", workers=1, progress=False)
    kinds = {"corrupt": "unreadable", "truncated": "truncated", "tiny": "too_small", "duplicate": "duplicate",
             "bad_label": "bad_label"}
    expected = sorted((kinds[f], *planted[f][0]) for f in kinds)
    assert _found(report) == expected
    # eval: 6 fakes + 1 truncated fake vs 6 reals + 1 rotated real -> balanced; train reals >= fakes
    assert _found(report, "warning") == [("exif_rotated", *planted["exif_rotated"][0])]
    assert any("Pix2Pix" in n for n in report.notes)  # unknown generator: dropped, as the reference does
    assert not report.ok
    text = format_report(report)
    assert "FAILED: 5 error(s)" in text and "train id" in text


def test_csv_faults_found_and_nothing_else(tmp_path):
    csv = write_csv_dataset(tmp_path / "mine", {"GanA": "2018-01-01", "GanB": "2019-01-01"}, train_fakes=3,
                            eval_fakes=2)
    root = csv.parent
    good = png_bytes(make_image(42, 0))
    (root / "img" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    (root / "img" / "truncated.png").write_bytes(good[: len(good) // 2])
    (root / "img" / "tiny.png").write_bytes(png_bytes(make_image(43, 0, size=(12, 30))))
    (root / "img" / "dup.png").write_bytes((root / "img" / "eval_real_000.png").read_bytes())
    (root / "img" / "rot.png").write_bytes(png_bytes(make_image(44, 0), exif_orientation=8))
    extra = ["img/corrupt.png,0,,train", "img/truncated.png,1,GanA,train", "img/tiny.png,0,,train",
             "img/dup.png,0,,train", "img/eval_real_001.png,3,,train", "img/train_g0_000.png,1,Undated,train"]
    with open(csv, "a") as f:
        f.write("\n".join(extra) + "\n")
    n_train = 12  # 6 reals + 6 fakes written by write_csv_dataset, ids 0..11
    report = check_spec(f"csv:{csv}", tmp_path / "cache", workers=1, progress=False)
    assert _found(report) == sorted([
        ("unreadable", "train", n_train), ("truncated", "train", n_train + 1), ("too_small", "train", n_train + 2),
        ("duplicate", "train", n_train + 3), ("bad_label", "train", n_train + 4),
        ("missing_date", "train", n_train + 5),
    ])
    assert _found(report, "warning") == []
    # the JSON for scripts, and the exit status
    code = main(["data", "check", f"csv:{csv}", "--json", "--cache-dir", str(tmp_path / "cache"), "--no-progress"])
    assert code == 1


def test_clean_dataset_passes_and_cli_exit_zero(tmp_path, capsys):
    root = tmp_path / "clean"
    write_release_dataset(root, generators=["ProGAN", "StarGAN"], seed=5)
    code = main(["data", "check", f"aigenbench:{root}", "--json", "--cache-dir", str(tmp_path / "c"),
                 "--no-progress"])
    doc = json.loads(capsys.readouterr().out)
    assert code == 0 and doc["ok"] and doc["problems"] == [] and doc["counts"]["eval"] == {"": 2, "ProGAN": 1,
                                                                                           "StarGAN": 1}
    assert main(["data", "info", f"aigenbench:{root}", "--cache-dir", str(tmp_path / "c")]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["windows"] == [["ProGAN", "StarGAN"]] and info["generator_id_to_name"] == ["", "ProGAN", "StarGAN"]


def test_skipping_bad_images(tmp_path):
    root = tmp_path / "ds"
    planted = write_release_dataset(root, generators=["ProGAN", "StarGAN"], train_fakes_per_generator=3,
                                    faults=["corrupt", "truncated", "tiny", "duplicate"], seed=6)
    m = load_source(f"aigenbench:{root}", tmp_path / "c", progress=False)  # image faults do not stop loading
    report = check_source(m, tmp_path / "c", workers=1, progress=False)
    assert not report.ok
    bad = sorted(x for f in ("corrupt", "truncated", "tiny", "duplicate") for x in planted[f])
    assert report.skippable() == bad
    cleaned = apply_skips(m, report)
    assert cleaned.extra["skipped"] == [list(x) for x in bad]
    assert len(cleaned.samples) == len(m.samples) - 4 and cleaned.checksum != m.checksum
    assert check_source(cleaned, None, workers=1, progress=False).ok
    with pytest.raises(ValueError, match="check this dataset again"):
        apply_skips(cleaned, report)
    # cached per manifest: a second check reads the stored report
    assert check_source(m, tmp_path / "c", workers=1, progress=False).to_dict() == report.to_dict()


def test_data_degrade_writes_what_the_detector_receives(tmp_path, capsys):
    img = make_image(7, 1, size=(300, 420))
    (tmp_path / "in.png").write_bytes(png_bytes(img))
    decoded = load_rgb(tmp_path / "in.png")
    # a position where the float tensor of a bilinear/bicubic crop reaches the detector, and one where not
    positions = {}
    for pos in range(400):
        _, rec = degrade_float(decoded, pos)
        positions.setdefault(any(r.get("float_output") for r in rec), pos)
        if len(positions) == 2:
            break
    for is_float, pos in positions.items():
        out_prefix = tmp_path / f"out{pos}"
        assert main(["data", "degrade", str(tmp_path / "in.png"), "--position", str(pos), "--out",
                     str(out_prefix)]) == 0
        printed = capsys.readouterr().out
        assert "random_resized_crop" in printed and f"position {pos}" in printed
        arr = np.load(f"{out_prefix}.npy")
        assert arr.dtype == np.float32 and arr.ndim == 3 and arr.shape[0] == 3
        u8, _ = degrade(decoded, pos)
        if is_float:  # exact float output; the uint8 API is its rounding and clipping
            np.testing.assert_array_equal(np.clip(np.rint(arr.transpose(1, 2, 0) * 255.0), 0, 255).astype(np.uint8),
                                          u8)
        else:
            np.testing.assert_array_equal(arr, u8.transpose(2, 0, 1).astype(np.float32) / np.float32(255))
        assert load_rgb(f"{out_prefix}.png").shape == u8.shape
    assert set(positions) == {True, False}
