"""The run-directory layout's owner: names, window directories, the done marker, run.json read and write; and
the localization file's owner (round trip, newer version refused)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from common import localization_file
from common import run_dir as layout
from common.predictions_file import SCHEMA_VERSION


def test_run_json_round_trip_is_atomic_and_stamped(tmp_path):
    assert layout.read_run_json(tmp_path) is None and not layout.has_run_json(tmp_path)
    path = layout.write_run_json(tmp_path, {"config": {"seed": 1}, "windows": [["a"]]})
    assert path == tmp_path / "run.json" and layout.has_run_json(tmp_path)
    doc = layout.read_run_json(tmp_path)
    assert doc == {"config": {"seed": 1}, "windows": [["a"]], "schema_version": SCHEMA_VERSION}
    assert json.loads(path.read_text()) == doc
    assert [p.name for p in tmp_path.iterdir()] == ["run.json"]  # no temporary left behind


@pytest.mark.parametrize(("text", "message"), [("{not json", "unreadable run.json"),
                                                ("[1, 2]", "must hold a JSON object, found list")])
def test_a_bad_run_json_is_refused_naming_the_file(tmp_path, text, message):
    (tmp_path / "run.json").write_text(text)
    with pytest.raises(layout.RunJsonError, match=message) as err:
        layout.read_run_json(tmp_path)
    assert str(tmp_path / "run.json") in str(err.value)


def test_window_directories_and_done_marker(tmp_path):
    for name in ("window_10", "window_2", "window_init", "window_x", "other"):
        (tmp_path / name).mkdir()
    assert [d.name for d in layout.window_dirs(tmp_path)] == ["window_2", "window_10"]
    assert layout.window_dir(tmp_path, 2) == tmp_path / "window_2" and layout.window_index(tmp_path / "window_10") == 10
    assert layout.window_index(tmp_path / "window_init") is None
    assert layout.initial_dir(tmp_path) == tmp_path / "window_init"
    assert layout.predictions_path(tmp_path / "window_2") == tmp_path / "window_2" / "predictions.npz"
    w = layout.window_dir(tmp_path, 2)
    assert not layout.is_done(w)
    layout.mark_done(w)
    assert layout.is_done(w) and layout.done_marker(w) == w / "done" and (w / "done").read_text().endswith("\n")


def test_localization_file_round_trip_and_newer_version(tmp_path):
    arrays = {"maps_u8": np.arange(6, dtype=np.uint8), "masks_packed": np.packbits(np.ones(6, bool)),
              "shapes": np.array([[2, 3]], np.int64), "inputs": np.str_("clean_full_image")}
    path = localization_file.write(tmp_path, arrays)
    back = localization_file.read(path)
    assert path.name == "localization.npz" and int(back["schema_version"]) == localization_file.SCHEMA_VERSION
    np.testing.assert_array_equal(back["maps_u8"], arrays["maps_u8"])
    np.savez(tmp_path / "new.npz", **arrays, schema_version=np.int64(99))
    with pytest.raises(ValueError, match="localization schema_version 99 is newer"):
        localization_file.read(tmp_path / "new.npz")
