"""The `aigenbench:` source on a dataset written in the exact release format (benchmark/testdata.py)."""

from __future__ import annotations

import hashlib
import shutil
import time
from collections import Counter

import numpy as np
import pytest
from test_timeline import DESIGN_TABLE as DESIGN_WINDOWS  # noqa: E402  (the DESIGN §3.3 table)

from benchmark.eval_plan import make_eval_plan
from benchmark.images import load_rgb
from benchmark.imagestore import forget_open_datasets, read_image
from benchmark.manifest import Sample
from benchmark.sources import SourceError, load_source
from benchmark.testdata import release_features, write_release_dataset
from benchmark.timeline import generator_id_to_name, make_windows
from benchmark.windows_plan import BenchmarkType, training_sets


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    root = tmp_path_factory.mktemp("release") / "ai_gen_bench_test"
    write_release_dataset(root)
    return root


@pytest.fixture(scope="module")
def manifest(release, tmp_path_factory):
    return load_source(f"aigenbench:{release}", tmp_path_factory.mktemp("cache"), progress=False)


def test_written_dataset_has_the_release_format(release):
    import datasets

    dd = datasets.load_from_disk(str(release))
    assert sorted(dd) == ["train", "validation"]
    for split in dd.values():
        assert split.features == release_features()
        assert set(split["generator"]) - {""} == {g for w in DESIGN_WINDOWS for g in w}


def test_records_ids_and_hashes(release, manifest):
    import datasets

    dd = datasets.load_from_disk(str(release))
    for hf_split, split in (("train", "train"), ("validation", "eval")):
        raw = dd[hf_split].cast_column("image", datasets.Image(decode=False))
        samples = manifest.split(split)
        assert [s.id for s in samples] == list(range(len(raw)))
        for s in samples[:: max(1, len(samples) // 9)]:
            row = raw[s.id]
            assert s.path == f"hf-row:{hf_split}/{s.id}"
            assert s.sha256 == hashlib.sha256(row["image"]["bytes"]).hexdigest()
            assert (s.label, s.generator, s.width, s.height, s.origin) == (
                row["label"], row["generator"], row["width"], row["height"], row["origin_dataset"])
            decoded = np.asarray(dd[hf_split][s.id]["image"].convert("RGB"))
            np.testing.assert_array_equal(read_image(manifest.root, s.path), decoded)


def test_windows_ids_and_pairing_match_design(release, manifest):
    import datasets

    windows = make_windows(manifest.timeline, 4)
    assert windows == DESIGN_WINDOWS
    names = generator_id_to_name(manifest.timeline)
    assert names[0] == "" and names[1] == "ADM" and names[36] == "VQGAN" and len(names) == 37
    plan = make_eval_plan(manifest.split("eval"), names)
    # balanced case (the public release): every eval image is used, 1 paired real per fake per generator
    assert len(plan.sample_ids) == len(manifest.split("eval"))
    fakes = Counter(plan.generator_ids[plan.labels == 1].tolist())
    paired = Counter(plan.pairing[plan.labels == 0].tolist())
    assert fakes == paired and set(fakes.values()) == {1} and len(fakes) == 36
    # order: datasets' own shuffle(seed=1340) of reals-then-fakes, as the reference does
    val = dd = datasets.load_from_disk(str(release))["validation"]
    val = dd.add_column("ID", list(range(len(dd))))
    reals = [i for i, g in enumerate(val["generator"]) if g == ""]
    fake_rows = [i for i, g in enumerate(val["generator"]) if g != ""]
    ref = val.select(reals + fake_rows).shuffle(seed=1340)["ID"]
    assert plan.sample_ids.tolist() == list(ref)


def test_training_sets_draw_unused_reals(manifest):
    windows = make_windows(manifest.timeline, 4)
    own = training_sets(manifest.split("train"), windows, BenchmarkType.parse("continual"))
    by_id = {s.id: s for s in manifest.split("train")}
    seen_reals: set[int] = set()
    for w, ids in enumerate(own):
        labels = Counter(by_id[i].label for i in ids)
        assert labels == {0: 8, 1: 8}, w
        assert {by_id[i].generator for i in ids if by_id[i].label} == set(windows[w])
        reals = {i for i in ids if by_id[i].label == 0}
        assert not reals & seen_reals
        seen_reals |= reals


def test_unknown_generators_dropped_ids_are_rows_before_filtering(tmp_path):
    import datasets

    from benchmark.testdata import _row

    rows = [_row(1, 0, "", "r0", "COCO"), _row(2, 1, "Pix2Pix", "p", "X"), _row(3, 1, "ProGAN", "f", "X"),
            _row(4, 0, "", "r1", "COCO")]
    feats = release_features()
    dd = datasets.DatasetDict({s: datasets.Dataset.from_list(rows, features=feats) for s in ("train", "validation")})
    dd.save_to_disk(str(tmp_path / "ds"))
    m = load_source(f"aigenbench:{tmp_path / 'ds'}", tmp_path / "cache", progress=False)
    assert [s.id for s in m.split("train")] == [0, 2, 3]
    assert m.timeline.keys() == {"ProGAN"}
    assert "dropped 1 rows" in " ".join(m.extra["notes"])


def test_manifest_cache_is_keyed_by_the_dataset(tmp_path):
    root = tmp_path / "ds"
    write_release_dataset(root, generators=["ProGAN", "StarGAN"], seed=1)
    t0 = time.perf_counter()
    m1 = load_source(f"aigenbench:{root}", tmp_path / "cache", progress=False)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    m2 = load_source(f"aigenbench:{root}", tmp_path / "cache", progress=False)
    assert m2.checksum == m1.checksum and time.perf_counter() - t0 < max(first, 0.05)
    assert len(list((tmp_path / "cache" / "manifests").glob("aigenbench-*.json"))) == 2  # manifest + scan
    shutil.rmtree(root)
    forget_open_datasets()
    write_release_dataset(root, generators=["ProGAN", "StarGAN"], seed=2)
    m3 = load_source(f"aigenbench:{root}", tmp_path / "cache", progress=False)
    assert m3.checksum != m1.checksum


def test_large_image_feature_is_readable(tmp_path):
    """Intermediate AI-GenBench builds keep the custom LargeImage feature; they load the same."""
    import datasets

    from benchmark.imagestore import register_large_image_feature

    register_large_image_feature()
    from datasets.features.features import _FEATURE_TYPES

    src = tmp_path / "plain"
    write_release_dataset(src, generators=["ProGAN"], seed=3)
    dd = datasets.load_from_disk(str(src))
    large = datasets.DatasetDict({k: v.cast_column("image", _FEATURE_TYPES["LargeImage"]()) for k, v in dd.items()})
    large.save_to_disk(str(tmp_path / "large"))
    assert "LargeImage" in (tmp_path / "large" / "train" / "dataset_info.json").read_text()
    a = load_source(f"aigenbench:{src}", tmp_path / "c", progress=False)
    b = load_source(f"aigenbench:{tmp_path / 'large'}", tmp_path / "c", progress=False)
    assert [s.sha256 for s in a.samples] == [s.sha256 for s in b.samples]
    np.testing.assert_array_equal(read_image(b.root, b.samples[0].path), read_image(a.root, a.samples[0].path))


def test_rows_are_read_in_worker_processes(release, manifest, tmp_path):
    """DataLoader workers and the eval-cache process pool open the Arrow files themselves."""
    import torch

    from benchmark.degradations import degrade
    from benchmark.eval_cache import build_or_load_eval_inputs
    from benchmark.images import adapt_to_input, to_chw
    from protocols.data import TrainCopies

    ids = [s.id for s in manifest.split("train")][:6]
    ds = TrainCopies(manifest, ids, 1, 32, seed=0, profile="light", resize_mode="center_crop")
    batches = list(torch.utils.data.DataLoader(ds, batch_size=3, num_workers=2))
    assert sorted(torch.cat([b[2] for b in batches]).tolist()) == ids
    plan = make_eval_plan(manifest.split("eval"), generator_id_to_name(manifest.timeline))
    sel = plan.sample_ids[:24]
    arr, _ = build_or_load_eval_inputs(manifest, sel, "aigenbench-v1", 4321, 32, "resize_center_crop",
                                       tmp_path / "ev", workers=2, progress=False)
    by_id = {s.id: s for s in manifest.split("eval")}
    for pos in (0, 23):
        img = read_image(manifest.root, by_id[int(sel[pos])].path)
        expected = to_chw(adapt_to_input(degrade(img, pos)[0], 32, "resize_center_crop"))
        np.testing.assert_array_equal(arr[pos], expected)


def test_bad_specs_are_loud(tmp_path):
    with pytest.raises(SourceError, match="dataset_dict.json"):
        load_source(f"aigenbench:{tmp_path}", tmp_path / "c", progress=False)
    with pytest.raises(SourceError, match="options are"):
        load_source(f"aigenbench:{tmp_path}?foo=1", tmp_path / "c", progress=False)
    with pytest.raises(SourceError, match="neither a file nor a shipped timeline"):
        load_source(f"aigenbench:{tmp_path}?timeline=nope", tmp_path / "c", progress=False)


def test_stratified_fake_subsampling_matches_sklearn():
    """More eval fakes than reals: fakes are subsampled like the reference (sklearn, seed 1338)."""
    from sklearn.model_selection import train_test_split

    gens = ["A"] * 6 + ["B"] * 4 + ["C"] * 2
    samples = [Sample(i, "eval", 0, "", f"r{i}", 8, 8) for i in range(6)]
    samples += [Sample(6 + i, "eval", 1, g, f"f{i}", 8, 8) for i, g in enumerate(gens)]
    plan = make_eval_plan(samples, ["", "A", "B", "C"])
    fake_rows = list(range(6, 18))
    kept, _ = train_test_split(fake_rows, train_size=6, stratify=gens, random_state=1338)
    subset = list(range(6)) + list(kept)
    order = np.random.default_rng(1340).permutation(len(subset))
    assert plan.sample_ids.tolist() == [subset[i] for i in order]
    assert Counter(plan.generator_ids[plan.labels == 1].tolist()) == {1: 3, 2: 2, 3: 1}
    assert Counter(plan.pairing[plan.labels == 0].tolist()) == {1: 3, 2: 2, 3: 1}


def test_decoding_from_bytes_matches_files(tmp_path, manifest):
    from benchmark.imagestore import read_bytes

    s = manifest.split("eval")[3]
    (tmp_path / "x.png").write_bytes(read_bytes(manifest.root, s.path))
    np.testing.assert_array_equal(load_rgb(tmp_path / "x.png"), read_image(manifest.root, s.path))


def test_memoised_manifest_checksum_follows_a_new_samples_list_or_timeline(manifest):
    """The checksum is memoised; a new or edited samples list or timeline recomputes it."""
    import dataclasses
    import datetime as dt

    first = manifest.checksum
    copy = dataclasses.replace(manifest)  # same lists: same checksum, memo not shared
    assert copy.checksum == first == manifest._compute_checksum()
    copy.samples = copy.samples[:-1]
    assert copy.checksum != first and copy.checksum == copy._compute_checksum()
    copy.samples = list(manifest.samples)
    assert copy.checksum == first
    copy.timeline = {**manifest.timeline, "Extra": dt.date(2030, 1, 1)}
    assert copy.checksum != first
    assert manifest.checksum == first
    copy.samples[0] = dataclasses.replace(copy.samples[0], label=1 - copy.samples[0].label)  # edited in place
    assert copy.checksum == copy._compute_checksum() != first
