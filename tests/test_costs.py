"""`arelbo costs`: a finished run's measured cost from Snakemake's benchmark files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from arelbo.reporting.costs import per_model, per_stage, read_benchmarks

HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"


def _bench(root: Path, rel: str, *seconds: float) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(HEADER + "".join(f"{s}\t0:00:01\t{100 + s}\t1\t1\t1\t0\t0\t50\t{s / 2}\n" for s in seconds))


@pytest.fixture
def bench(tmp_path):
    root = tmp_path / "benchmarks"
    _bench(root, "train/mnist/vae/seed0.tsv", 40.0)
    _bench(root, "encode/mnist/vae/seed0.tsv", 5.0)
    _bench(root, "estimators/mnist/vae/seed0/gmm10.tsv", 7.0)
    _bench(root, "estimators/mnist/vae/seed0/2ndvae.tsv", 11.0)
    _bench(root, "evaluate/mnist/vae/seed0.tsv", 30.0)
    _bench(root, "metrics/mnist/vae/seed0/mse.tsv", 6.0)
    _bench(root, "train/mnist/ae/seed1.tsv", 9.0, 20.0)  # a repeated benchmark: the latest row
    _bench(root, "sweeps/table5/batched-seed0/train.tsv", 100.0)
    _bench(root, "sweeps/table5/log10_sigma_z2=-1.0/seed0/criteria.tsv", 3.0)
    _bench(root, "fid_reference_mnist-test-n500.tsv", 60.0)
    _bench(root, "estimators/mnist/batched/seed0/2ndvae.tsv", 13.0)  # second_stage.batched: every model
    return root


def test_each_benchmark_file_is_one_job_named_by_its_path(bench):
    jobs = read_benchmarks(bench).set_index("file")
    assert len(jobs) == 11
    gmm = jobs.loc["estimators/mnist/vae/seed0/gmm10.tsv"]
    assert (gmm["stage"], gmm["job"], gmm["dataset"], gmm["model"], gmm["seed"]) == (
        "estimators",
        "estimators/gmm10",
        "mnist",
        "vae",
        0,
    )
    assert gmm["seconds"] == 7.0 and gmm["max_rss_mb"] == 107.0 and gmm["cpu_seconds"] == 3.5
    assert jobs.loc["train/mnist/ae/seed1.tsv", "seconds"] == 20.0
    assert jobs.loc["sweeps/table5/batched-seed0/train.tsv", "job"] == "sweeps/train"
    assert jobs.loc["fid_reference_mnist-test-n500.tsv", "stage"] == "other"
    shared = jobs.loc["estimators/mnist/batched/seed0/2ndvae.tsv"]  # a cost of the dataset, no model's
    assert (shared["stage"], shared["job"], shared["dataset"], shared["seed"]) == (
        "estimators",
        "estimators/2ndvae (batched)",
        "mnist",
        0,
    ) and pd.isna(shared["model"])


def test_a_table_row_costs_every_job_its_cells_need(bench):
    jobs = read_benchmarks(bench)
    rows = per_model(jobs)
    vae = rows.loc[("mnist", "vae", 0)]
    assert vae["total"] == 40 + 5 + 7 + 11 + 30 + 6 and vae["estimators"] == 18
    assert rows.loc[("mnist", "ae", 1), "total"] == 20
    stages = per_stage(jobs)
    assert stages.loc["train", "jobs"] == 2 and stages.loc["train", "job_hours"] == pytest.approx(60 / 3600)
    assert stages.loc["sweeps", "max_s"] == 100 and stages.index[0] == "sweeps"  # costliest first
    assert stages["jobs"].sum() == len(jobs)


def test_a_file_that_is_no_benchmark_is_named(tmp_path):
    bad = tmp_path / "benchmarks" / "train" / "mnist" / "vae" / "seed0.tsv"
    bad.parent.mkdir(parents=True)
    bad.write_text("hello\n")
    with pytest.raises(ValueError, match=r"seed0\.tsv: not a Snakemake benchmark file"):
        read_benchmarks(tmp_path / "benchmarks")


def test_cli_prints_the_costs_and_writes_one_row_per_job(bench, tmp_path):
    out = tmp_path / "costs.csv"
    result = subprocess.run(
        [sys.executable, "-m", "arelbo", "costs", "--logs", str(bench.parent), "--out", str(out)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert "11 jobs" in result.stdout and "seconds per Table 3/4 row" in result.stdout
    assert len(out.read_text().strip().splitlines()) == 1 + 11
    missing = subprocess.run(
        [sys.executable, "-m", "arelbo", "costs", "--logs", str(tmp_path / "nope")], capture_output=True, text=True
    )
    assert missing.returncode != 0 and "no benchmark folder" in missing.stderr
