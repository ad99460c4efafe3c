"""`arelbo plan`: projected cost of a config from the workflow's own job list and measured per-image costs."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from arelbo.config import ConfigError, load_config
from arelbo.plan import device_costs, job_cost, plan, planned_jobs

REPO = Path(__file__).resolve().parents[1]


def test_a_training_costs_its_images_times_the_measured_per_image_cost():
    cfg = load_config("config/quick.yaml", check_folders=False)
    costs = device_costs("cpu-2core")
    got = job_cost(cfg, costs, "train", {"dataset": "mnist", "model": "vae", "seed": "0"})
    # 2 epochs × (4,000 training + 1,000 validation images at a third of the cost), plus start-up
    expected = costs["job_startup_s"] + costs["train_image_s"]["mnist"] * 2 * (4000 + 1000 / 3)
    assert got.seconds == pytest.approx(expected) and got.gpu
    gmm = job_cost(cfg, costs, "fit_estimator", {"dataset": "mnist", "pkl_estimator": "gmm10"})
    assert not gmm.gpu and gmm.seconds > costs["job_startup_s"]


def test_costs_never_measured_on_a_kind_are_left_out_not_guessed():
    cfg = load_config(check_folders=False)            # the paper config: CelebA trainings
    costs = device_costs("cpu-2core")
    assert job_cost(cfg, costs, "train", {"dataset": "celeba"}).seconds is None
    result = plan(cfg, "cpu-2core", [("train", {"dataset": "celeba"}), ("train", {"dataset": "mnist"})])
    assert result["unmeasured_jobs"] == 1 and result["rules"]["train"]["jobs"] == 2
    # the paper's MNIST training: 100 epochs × (55,000 + 5,000/3) images
    assert result["job_seconds"] == pytest.approx(costs["job_startup_s"]
                                                  + costs["train_image_s"]["mnist"] * 100 * (55000 + 5000 / 3))


def test_an_unknown_device_kind_says_which_kinds_are_measured():
    with pytest.raises(ConfigError, match="no measured costs for device kind 'h100'.*cpu-2core"):
        device_costs("h100")


def test_the_plan_of_quick_counts_the_dry_runs_jobs(tmp_path):
    cfg = load_config("config/quick.yaml", check_folders=False)
    jobs = planned_jobs(["config/quick.yaml"])
    rules = [r for r, _ in jobs if r != "all"]
    result = plan(cfg, "cpu-2core", jobs)
    assert sum(r["jobs"] for r in result["rules"].values()) == len(rules)
    # fid.batched: one sample-and-score job per model (10 with a prior, 3 without) instead of 62 + 62
    assert result["rules"]["sample_and_score_mnist_with_prior"]["jobs"] == 10
    assert result["rules"]["sample_and_score_mnist_without_prior"]["jobs"] == 3
    assert "metric_fid" not in result["rules"] and result["unmeasured_jobs"] == 0
    assert result["rules"]["sweep_train_table5"]["jobs"] == 1     # quick trains its grid in groups
    out = subprocess.run([sys.executable, "-m", "arelbo", "plan", "--config", "config/quick.yaml"], cwd=REPO,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "sample_and_score_mnist_with_prior" in out.stdout and "job-hours" in out.stdout and "h wall" in out.stdout


def test_a_batched_evaluation_job_costs_its_samplers_with_one_start_up():
    """fid.batched's job = one start-up and Inception build + every sampler's decode and features,
    where the per-cell layout pays the start-up and the build once per sample and FID job."""
    cfg = load_config("config/quick.yaml", check_folders=False)
    costs = device_costs("cpu-2core")
    n = cfg.fid.n_samples
    with_prior = job_cost(cfg, costs, "sample_and_score_mnist_with_prior", {"dataset": "mnist", "model": "vae"})
    without = job_cost(cfg, costs, "sample_and_score_mnist_without_prior", {"dataset": "mnist", "model": "ae"})
    per_sampler = (costs["decode_image_s"]["mnist"] + costs["inception_image_s"]) * n
    # MNIST's samplers: prior, 2ndVAE, GMM-10 and the two interpolations; no prior for the AE
    assert with_prior.seconds == pytest.approx(costs["job_startup_s"] + costs["fid_fixed_s"] + 5 * per_sampler)
    assert without.seconds == pytest.approx(with_prior.seconds - per_sampler) and with_prior.gpu
    per_cell = sum(job_cost(cfg, costs, rule, {"dataset": "mnist"}).seconds for rule in ("sample", "metric_fid"))
    assert with_prior.seconds < 5 * per_cell - 4 * (2 * costs["job_startup_s"] + costs["fid_fixed_s"]) + 1e-9



def test_a_batched_second_stage_job_costs_every_model_with_one_start_up():
    """second_stage.batched: one job per dataset = one start-up + every model's second-stage compute."""
    cfg = load_config("config/quick.yaml", check_folders=False)
    costs = device_costs("cpu-2core")
    one = job_cost(cfg, costs, "fit_second_stage", {"dataset": "mnist", "model": "vae"})
    batched = job_cost(cfg, costs, "fit_second_stages_mnist", {"seed": "0"})
    start = costs["job_startup_s"]
    assert batched.seconds == pytest.approx(start + len(cfg.models) * (one.seconds - start)) and batched.gpu
    assert one.seconds > start
