"""The Snakemake DAG: the paper config's dry run, and a real run of config/ci.yaml end to end."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from arelbo.objectives import MODELS

REPO = Path(__file__).resolve().parents[1]


def snakemake(*args: str, timeout: int = 1800) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "snakemake", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)


def job_counts(output: str) -> dict[str, int]:
    table = output.split("Job stats:")[1].split("total")[0]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)\s*$", table, re.M)}


def test_paper_config_dry_run_lists_26_trainings(tmp_path):
    result = snakemake("-n", "--cores", "8", "--config", f"outdir={tmp_path}/out", f"logdir={tmp_path}/logs")
    assert result.returncode == 0, result.stderr[-3000:]
    counts = job_counts(result.stdout)
    assert counts["train"] == 26  # 13 models × {mnist, celeba} × one seed


def test_wildcards_are_constrained_to_configured_ids(tmp_path):
    result = snakemake(f"{tmp_path}/out/models/mnist/not_a_model/seed0/model.pt", "-n", "--cores", "1",
                       "--configfile", "config/ci.yaml", "--config", f"outdir={tmp_path}/out",
                       f"logdir={tmp_path}/logs")
    assert result.returncode != 0
    assert "MissingRuleException" in result.stdout + result.stderr or "No rule to produce" in result.stdout + result.stderr


def test_table_targets_build_the_whole_evaluation_dag(tmp_path):
    result = snakemake(f"{tmp_path}/out/table3.tex", f"{tmp_path}/out/table4.tex", "-n", "--cores", "8",
                       "--config", f"outdir={tmp_path}/out", f"logdir={tmp_path}/logs")
    assert result.returncode == 0, result.stderr[-3000:]
    counts = job_counts(result.stdout)
    # per dataset: 13 models -> 13 encodings, 13 MSEs, 13 second stages, 13·2 GMMs + 10 priors (no prior
    # for ae, rae, rae_gp), samples/FIDs for 10 + 13·3 estimators + 13·2 interpolations
    assert counts["train"] == counts["encode"] == counts["metric_mse"] == counts["fit_second_stage"] == 26
    assert counts["fit_estimator"] == 2 * (10 + 26)
    assert counts["sample"] == counts["metric_fid"] == 2 * (10 + 39 + 26)
    assert counts["table3"] == counts["table4"] == 1


@pytest.fixture(scope="module")
def ci_run(tmp_path_factory, ci_config):
    # Training for every model on both datasets; the FID stages are covered by tests/test_evaluate.py
    # (the full evaluation DAG of ci.yaml is ~150 FIDs, over an hour of CPU Inception time).
    out = tmp_path_factory.mktemp("ci_run")
    targets = [f"{out}/results/models/{d}/{m}/seed0/model.pt" for d in ("mnist", "celeba") for m in MODELS]
    result = snakemake(*targets, "--cores", "2", "--configfile", "config/ci.yaml", "--config",
                       f"outdir={out}/results", f"logdir={out}/logs")
    assert result.returncode == 0, (result.stdout[-4000:], result.stderr[-4000:])
    return out


@pytest.mark.slow
def test_ci_config_runs_end_to_end(ci_run, ci_config):
    results = ci_run / "results"
    for dataset in ("mnist", "celeba"):
        for model in MODELS:
            folder = results / "models" / dataset / model / "seed0"
            assert (folder / "model.pt").is_file() and (folder / "train_log.csv").is_file(), folder
    assert (results / "config.yaml").read_text().startswith("name: ci")
    # every heavy rule left a log and a benchmark
    assert list((ci_run / "logs" / "train").rglob("*.log")) and list((ci_run / "logs" / "benchmarks").rglob("*.tsv"))
