"""A run refuses a dataset that fails the data check, or leaves the listed images out when told to."""

import json

import pytest
from helpers import write_release_dataset

from benchmark.sources import SourceError
from protocols.config import resolve_config
from protocols.engine import prepare_benchmark, run_experiment


@pytest.fixture(scope="module")
def faulty_release(tmp_path_factory):
    root = tmp_path_factory.mktemp("release") / "rel"
    planted = write_release_dataset(root, faults=["truncated"], extra_eval_reals=0)
    return root, planted


def cfg_for(root, tmp_path, cache_dir, **over):
    return resolve_config("smoke", overrides=[{"dataset": f"aigenbench:{root}", "runs_dir": str(tmp_path),
                                               "cache_dir": str(cache_dir), "experiment": "faulty"} | over])


def test_run_refuses_a_dataset_that_fails_the_check(faulty_release, tmp_path, cache_dir):
    root, _ = faulty_release
    with pytest.raises(SourceError, match="(?s)fails the data check.*truncated.*data.skip_bad_images=true"):
        prepare_benchmark(cfg_for(root, tmp_path, cache_dir), progress=False)
    assert not (tmp_path / "faulty").exists()  # refused before anything was written


def test_skipping_leaves_the_listed_images_out_and_records_them(faulty_release, tmp_path, cache_dir):
    root, planted = faulty_release
    cfg = cfg_for(root, tmp_path, cache_dir, data={"skip_bad_images": True},
                  benchmark={"generators_per_window": 36})
    bench = prepare_benchmark(cfg, progress=False)
    skipped = [tuple(x) for x in bench.manifest.extra["skipped"]]
    assert set(skipped) == {tuple(x) for x in planted["truncated"]}
    run_dir = run_experiment(cfg, progress=False)
    info = json.loads((run_dir / "run.json").read_text())
    assert [tuple(x) for x in info["dataset"]["skipped_images"]] == skipped
