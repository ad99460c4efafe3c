"""`arelbo plan`: projected cost of a config from the workflow's own job list and measured per-image costs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from arelbo.core.config import ConfigError, load_config
from arelbo.planning.plan import device_costs, job_cost, plan, planned_jobs

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
    cfg = load_config(check_folders=False)  # the paper config: CelebA trainings
    costs = device_costs("cpu-2core")
    assert job_cost(cfg, costs, "train", {"dataset": "celeba"}).seconds is None
    jobs = [("train", {"dataset": "celeba"}), ("train", {"dataset": "mnist"})]
    result = plan(cfg, "cpu-2core", jobs, max_threads=costs["threads_per_job"])  # jobs as the costs were measured
    assert result["unmeasured_jobs"] == 1 and result["rules"]["train"]["jobs"] == 2
    # the paper's MNIST training: 100 epochs × (55,000 + 5,000/3) images
    assert result["job_seconds"] == pytest.approx(
        costs["job_startup_s"] + costs["train_image_s"]["mnist"] * 100 * (55000 + 5000 / 3)
    )


def test_an_unknown_device_kind_says_which_kinds_are_measured():
    with pytest.raises(ConfigError, match="no measured costs for device kind 'h100'.*cpu-2core"):
        device_costs("h100")


def test_the_plan_of_quick_counts_the_dry_runs_jobs(tmp_path):
    cfg = load_config("config/quick.yaml", check_folders=False)
    jobs = planned_jobs(["config/quick.yaml"])
    rules = [r for r, *_ in jobs if r != "all"]
    result = plan(cfg, "cpu-2core", jobs)
    assert sum(r["jobs"] for r in result["rules"].values()) == len(rules)
    # fid.batched: one sample-and-score job per model (10 with a prior, 3 without) instead of 62 + 62
    assert result["rules"]["sample_and_score_mnist_with_prior"]["jobs"] == 10
    assert result["rules"]["sample_and_score_mnist_without_prior"]["jobs"] == 3
    assert "metric_fid" not in result["rules"] and result["unmeasured_jobs"] == 0
    assert result["rules"]["section3_train"]["jobs"] == 15  # quick trains one job per grid point
    out = subprocess.run(
        [sys.executable, "-m", "arelbo", "plan", "--config", "config/quick.yaml"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    assert "sample_and_score_mnist_with_prior" in out.stdout and "job-hours" in out.stdout and "h wall" in out.stdout
    # every job with a `benchmark:` in the workflow has its file named, under the config's log folder
    benchmarks = {job.rule: job.benchmark for job in jobs}
    assert benchmarks["train"].startswith("benchmarks/train/mnist/") and benchmarks["all"] is None


# ---------------------------------------------------------------------------- the workflow's DAGs and rules

CONFIGS = ("config/quick.yaml", "config/ci.yaml", "config/config.yaml")


@pytest.fixture(scope="module")
def dags(tmp_path_factory):
    """The DAG of each config with section3.batched, fid.batched and second_stage.batched all false
    and all true (each switch only chooses its own rules), built in parallel."""
    from concurrent.futures import ThreadPoolExecutor

    from arelbo.planning.dag import batched_overlay

    folder = tmp_path_factory.mktemp("overlays")
    variants = [(config, batched) for config in CONFIGS for batched in (False, True)]
    with ThreadPoolExecutor(len(variants)) as pool:
        found = pool.map(lambda v: planned_jobs([v[0], batched_overlay(folder, v[1])]), variants)
        return dict(zip(variants, found))


def test_every_rule_of_the_workflow_has_a_cost_and_every_cost_a_rule(dags):
    """job_cost dispatches on the rule's name: each rule of the workflow's DAGs is named there (no
    silent default), and it names no rule the workflow does not have."""
    from arelbo.planning.dag import every_rule
    from arelbo.planning.plan import RULE_COSTS, TARGET_RULE

    in_dags = {job.rule for jobs in dags.values() for job in jobs}
    assert in_dags - {TARGET_RULE} == set(RULE_COSTS), (in_dags ^ set(RULE_COSTS)) - {TARGET_RULE}
    assert set(every_rule()) == in_dags  # the workflow's rules for the paper config, both layouts
    with pytest.raises(ValueError, match="no cost for rule 'surprise'"):
        job_cost(load_config(check_folders=False), device_costs("cpu-2core"), "surprise", {})


def test_a_gpu_job_is_one_whose_rule_asks_for_a_gpu(dags):
    """Whether a planned job runs on the config's device is its rule's `gpu` resource in the workflow,
    the same for a job of the DAG and for its rule looked up by name."""
    from arelbo.planning.plan import rule_uses_gpu

    cfg = load_config(check_folders=False)
    costs = device_costs("cpu-2core")
    gpu = {}
    for jobs in dags.values():
        for job in jobs:
            assert gpu.setdefault(job.rule, job.gpu) == job.gpu  # one answer per rule
    assert gpu["train"] and gpu["figure"] and gpu["section3_criteria"] and gpu["fit_second_stages_celeba"]
    assert not (gpu["fit_estimator"] or gpu["prepare_dataset"] or gpu["table"] or gpu["all"])
    for rule, expected in gpu.items():
        assert rule_uses_gpu(rule) == expected, rule
    result = plan(cfg, "cpu-2core", dags[("config/config.yaml", False)])
    assert {rule: row["gpu"] for rule, row in result["rules"].items()} == {rule: gpu[rule] for rule in result["rules"]}
    assert job_cost(cfg, costs, "figure", {"number": "1"}, gpu=False).gpu is False  # a job's own says


def test_the_dag_reads_its_config_files_and_config_entries(dags):
    """Config files merged in order (as --configfile overlays), then KEY=VALUE entries (as --config);
    the jobs in one order, whatever the run."""
    quick = planned_jobs(["config/quick.yaml"])  # quick batches FID and second stages, not Section 3
    assert {j.rule for j in quick} == {j.rule for j in dags[("config/quick.yaml", True)]} - {
        "section3_train_table1_stochastic",
        "section3_train_table1_deterministic",
        "section3_train_table5",
    } | {"section3_train"}
    assert sum(job.rule == "section3_train" for job in dags[("config/quick.yaml", False)]) == 15
    mnist_only = planned_jobs(["config/config.yaml"], ["datasets=[mnist]"])
    assert {job.wildcards["dataset"] for job in mnist_only if "dataset" in job.wildcards} == {"mnist"}
    with pytest.raises(RuntimeError, match="seeds"):
        planned_jobs(["config/quick.yaml"], ["seeds=[x]"])


def test_split_sizes_are_the_official_partitions():
    from arelbo.planning.plan import split_size
    from arelbo.stages.data import OFFICIAL_SPLIT_SIZES

    cfg = load_config(check_folders=False)
    assert OFFICIAL_SPLIT_SIZES["celeba"] == {"train": 162770, "val": 19867, "test": 19962}
    assert [split_size(cfg, "celeba", s) for s in ("train", "val", "test")] == [162770, 19867, 19962]
    val = cfg.data.mnist.val_size
    assert [split_size(cfg, "mnist", s) for s in ("train", "val", "test")] == [60000 - val, val, 10000]


def test_a_batched_evaluation_job_costs_its_samplers_with_one_start_up():
    """fid.batched's job = one start-up and Inception build + every sampler's decode and features,
    where the per-cell layout pays the start-up and the build once per sample and FID job."""
    cfg = load_config("config/quick.yaml", check_folders=False)
    costs = device_costs("cpu-2core")
    n = cfg.fid.n_samples
    with_prior = job_cost(cfg, costs, "sample_and_score_mnist_with_prior", {"dataset": "mnist", "model": "vae"})
    without = job_cost(cfg, costs, "sample_and_score_mnist_without_prior", {"dataset": "mnist", "model": "ae"})
    assert cfg.fid.uncertainty == "delta"
    delta = costs["delta_se_s"] * (n / 2048) ** 3  # N×N at N < 2049
    per_sampler = (costs["decode_image_s"]["mnist"] + costs["inception_image_s"]) * n + delta
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


# ---------------------------------------------------------------------------- FID bootstrap, GPU projections


def test_each_fids_uncertainty_is_costed_as_its_method_computes_it():
    """The paper's N = 10,000: the delta method adds one pass (`delta_se_s`) to the FID; the bootstrap
    costs fid.bootstrap_resamples resamples, each a 2048×2048 eigenproblem — what made it most of an
    FID job's cost; `none` adds nothing."""
    from dataclasses import replace

    cfg = load_config(check_folders=False)  # the paper: N = 10,000, the delta method
    costs = device_costs("cpu-2core")

    def seconds(uncertainty: str) -> float:
        config = replace(cfg, fid=replace(cfg.fid, uncertainty=uncertainty))
        return job_cost(config, costs, "metric_fid", {"dataset": "mnist", "model": "vae"}).seconds

    assert cfg.fid.uncertainty == "delta" and cfg.fid.bootstrap_resamples == 1000
    assert seconds("delta") - seconds("none") == pytest.approx(costs["delta_se_s"])
    assert seconds("bootstrap") - seconds("none") == pytest.approx(1000 * costs["bootstrap_resample_s"])
    assert seconds("bootstrap") - seconds("delta") > 300 * costs["delta_se_s"]


def test_the_op_counter_counts_launches_not_views():
    import torch

    from arelbo.planning.projection import count_step

    x = torch.rand((4, 6), device="meta")
    count = count_step(lambda: (x.view(6, 4).t() + 1).sum(), images=4)
    assert (count.ops, count.kernels) == (4, 2)  # view, t: no kernel; add, sum: one each
    w = torch.rand((6, 3), device="meta")
    assert count_step(lambda: x @ w, images=4).flops == 2 * 4 * 6 * 3


def test_batching_k_models_keeps_one_steps_launches_and_multiplies_its_arithmetic():
    """The point of section3.batched / second_stage.batched on a GPU: K stacked models are one step's
    operators (vmap), not K steps'. Counted on the real vmapped steps; a K-iteration loop would fail."""
    from arelbo.planning.projection import second_stage_step, section3_step

    for one, stacked in [
        (section3_step("table5", 1, 8, 64, 1e-3), section3_step("table5", 21, 8, 64, 1e-3)),
        (second_stage_step(1, 16, 256, 3, 64, 1e-4), second_stage_step(13, 16, 256, 3, 64, 1e-4)),
    ]:
        assert stacked.models > 1 and one.models == 1 and stacked.flops == one.flops > 0
        assert stacked.kernels < 2 * one.kernels and stacked.ops < 2 * one.ops
    row = device_costs("nvidia-h100")
    one, stacked = section3_step("table5", 1, 8, 64, 1e-3), section3_step("table5", 21, 8, 64, 1e-3)
    assert stacked.seconds(row) < 21 * one.seconds(row) / 4


def test_a_gpu_kind_not_measured_is_projected_and_says_so():
    """nvidia-h100 has no measured row yet: the plan projects every GPU job from counted steps and
    labels the result; the paper's CelebA training step (~1.2 TFLOP) is bound by arithmetic, the
    MNIST one (~13 GFLOP, a few hundred launches) by the host."""
    cfg = load_config(check_folders=False)
    row = device_costs("nvidia-h100")
    assert "NOT MEASURED" in row["projected"]
    mnist = job_cost(cfg, row, "train", {"dataset": "mnist", "model": "vae", "seed": "0"})
    celeba = job_cost(cfg, row, "train", {"dataset": "celeba", "model": "vae", "seed": "0"})
    assert mnist.seconds and celeba.seconds and mnist.gpu and celeba.gpu
    assert celeba.device_seconds > 0.9 * (celeba.seconds - row["job_startup_s"])
    assert mnist.device_seconds < 0.5 * (mnist.seconds - row["job_startup_s"])
    result = plan(
        cfg,
        "nvidia-h100",
        [("train", {"dataset": "celeba", "model": "vae"}), ("metric_fid", {"dataset": "mnist", "model": "vae"})],
    )
    assert result["unmeasured_jobs"] == 0 and result["device_busy_seconds"] > 0
    from arelbo.planning.plan import format_plan, wall_seconds

    text = format_plan(result, cores=16)
    assert "PROJECTED" in text and "GPU busy" in text
    assert wall_seconds(result, 16) >= result["device_busy_seconds"]  # jobs share idle time, not arithmetic


def test_each_training_is_costed_at_the_precision_it_runs_at_on_the_gpu():
    """The paper's CelebA trainings are bound by arithmetic: a TF32-tolerant model costs its flops at
    the row's TF32 rate, Diag-D AR-ELBO (IEEE FP32 by the policy) at the FP32 rate, and `precision:
    fp32` (TF32 off for every model) prices every model at the FP32 rate — what turning TF32 off costs."""
    import dataclasses

    from arelbo.planning import projection
    from arelbo.stages.train import model_hparams

    cfg = load_config(check_folders=False)
    row = device_costs("nvidia-h100")
    rates = row["achieved_tflops"]
    assert rates["fp32"] < rates["tf32"] < rates["bf16"]

    def device_seconds(config, model):
        job = job_cost(config, row, "train", {"dataset": "celeba", "model": model, "seed": "0"})
        return job.device_seconds

    def flop_seconds(model, precision):
        settings = cfg.train.celeba
        count = projection.train_step(
            "celeba",
            model,
            settings.batch_size,
            settings.lr,
            tuple(sorted(model_hparams(cfg, model, "celeba").items())),
        )
        return count.flops / (rates[precision] * 1e12)

    strict = dataclasses.replace(
        cfg, train=dataclasses.replace(cfg.train, celeba=dataclasses.replace(cfg.train.celeba, precision="fp32"))
    )
    assert cfg.train.celeba.precision == "tf32"
    vae_tf32, vae_fp32 = device_seconds(cfg, "vae"), device_seconds(strict, "vae")
    # per step: launches' floor + flops at the rate; the arithmetic dominates a CelebA step
    assert vae_fp32 / vae_tf32 == pytest.approx(flop_seconds("vae", "fp32") / flop_seconds("vae", "tf32"), rel=0.05)
    assert vae_fp32 / vae_tf32 > 2.5
    assert device_seconds(cfg, "diag_d_arelbo") == pytest.approx(device_seconds(strict, "diag_d_arelbo"))


def test_what_the_docs_say_turning_tf32_off_costs_is_what_the_plan_says():
    """docs/design.md's job-hours and wall times of the paper's trainings at `tf32` and at `fp32` on
    the projected H100 (16 cores), and docs/running.md's ratio, are the plan's of today."""
    import dataclasses
    import re

    from arelbo.planning.plan import wall_seconds

    cfg = load_config(check_folders=False)
    strict = dataclasses.replace(
        cfg,
        train=dataclasses.replace(
            cfg.train,
            mnist=dataclasses.replace(cfg.train.mnist, precision="fp32"),
            celeba=dataclasses.replace(cfg.train.celeba, precision="fp32"),
        ),
    )
    jobs = planned_jobs([])
    results = {name: plan(c, "nvidia-h100", jobs) for name, c in (("tf32", cfg), ("fp32", strict))}
    train_hours = {name: r["rules"]["train"]["seconds"] / 3600 for name, r in results.items()}
    wall_hours = {name: wall_seconds(r, 16) / 3600 for name, r in results.items()}
    design = (REPO / "docs" / "design.md").read_text()
    policy = " ".join(design[design.index("**The price.**") :].split("**Records.**")[0].split())
    said = re.search(r"take ([\d.]+) job-hours at the default `tf32` and ([\d.]+) with `precision: fp32`", policy)
    assert said, policy
    assert (float(said.group(1)), float(said.group(2))) == (
        round(train_hours["tf32"], 1),
        round(train_hours["fp32"], 1),
    )
    walls = re.search(r"from ≈ ([\d.]+) h to ≈ ([\d.]+) h", policy)
    assert (float(walls.group(1)), float(walls.group(2))) == (
        round(wall_hours["tf32"], 1),
        round(wall_hours["fp32"], 1),
    )
    running = " ".join((REPO / "docs" / "running.md").read_text().split())
    ratio = re.search(r"the paper's trainings then take about ([\d.]+)× as long", running)
    assert float(ratio.group(1)) == round(train_hours["fp32"] / train_hours["tf32"], 1)


def test_the_paper_config_plans_on_a_gpu_kind():
    """The command a user runs before submitting the paper to one GPU."""
    out = subprocess.run(
        [sys.executable, "-m", "arelbo", "plan", "--device", "nvidia-h100", "--cores", "16"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    assert "PROJECTED" in out.stdout and "NOT included" not in out.stdout
    rules = {line.split()[0] for line in out.stdout.splitlines()[3:] if line.strip()}
    assert {"train", "section3_train", "metric_fid", "fit_second_stage", "fit_estimator"} <= rules


def test_the_plan_set_against_a_finished_run_reads_each_jobs_benchmark_file(tmp_path):
    """`arelbo plan --against LOGDIR`: each planned job's measured seconds from the benchmark file the
    workflow gave it, beside its planned seconds; jobs that did not run are not compared."""
    from arelbo.planning.plan import format_plan

    cfg = load_config("config/quick.yaml", check_folders=False)
    bench = tmp_path / "benchmarks" / "train" / "mnist"
    (bench / "vae").mkdir(parents=True)
    (bench / "vae" / "seed0.tsv").write_text("s\th:m:s\tmax_rss\n90.0\t0:01:30\t800\n120.0\t0:02:00\t810\n")
    jobs = [
        ("train", {"dataset": "mnist", "model": model, "seed": "0"}, f"benchmarks/train/mnist/{model}/seed0.tsv")
        for model in ("vae", "ae")
    ] + [("all", {}, None)]
    result = plan(cfg, "cpu-2core", jobs, against=tmp_path, max_threads=device_costs("cpu-2core")["threads_per_job"])
    row = result["rules"]["train"]
    one = job_cost(cfg, device_costs("cpu-2core"), "train", {"dataset": "mnist", "model": "vae"}).seconds
    assert (row["jobs"], row["ran"]) == (2, 1)
    assert row["ran_seconds"] == 120.0 and row["ran_planned"] == pytest.approx(one)  # the latest run's row
    text = format_plan(result, cores=2)
    assert "1 planned job(s) have a benchmark file there" in text and f"ran/planned {120.0 / one:.2f}" in text


def test_a_jobs_work_scales_with_its_threads_by_amdahls_law():
    # the CPU row is measured on make quick's 1-thread jobs; the rules ask for 2 threads, which a run
    # without --max-threads gives them: their work then takes (1 - p) + p / 2 as long
    from arelbo.planning.plan import RULE_THREADS, format_plan, thread_slowdown

    cfg = load_config("config/quick.yaml", check_folders=False)
    costs = device_costs("cpu-2core")
    p, measured = costs["parallel_fraction"], costs["threads_per_job"]
    assert 0 < p < 1 and measured == 1 and RULE_THREADS == 2
    assert thread_slowdown(costs, 1) == 1.0 and thread_slowdown(costs, 2) == pytest.approx(1 - p / 2)
    jobs = [("train", {"dataset": "mnist", "model": "vae", "seed": "0"}), ("table", {"n": "3"})]
    one, two = plan(cfg, "cpu-2core", jobs, max_threads=1), plan(cfg, "cpu-2core", jobs, cores=8)
    start = costs["job_startup_s"]
    work = one["rules"]["train"]["seconds"] - start
    assert two["rules"]["train"]["seconds"] == pytest.approx(start + work * (1 - p / 2))  # start-up does not scale
    assert one["rules"]["table"]["seconds"] == two["rules"]["table"]["seconds"] == costs["light_job_s"]
    # Snakemake gives a job at most --cores threads: on one core the rules' 2 threads are 1
    assert plan(cfg, "cpu-2core", jobs, cores=1)["rules"]["train"]["seconds"] == one["rules"]["train"]["seconds"]
    # two 1-thread jobs at once on 2 cores, one 2-thread job: the wall time says so
    assert "2 jobs of 1 threads at a time" in format_plan(one, cores=2)
    assert "1 jobs of 2 threads at a time" in format_plan(plan(cfg, "cpu-2core", jobs, cores=2), cores=2)


def test_plan_defaults_to_this_machines_cores_or_a_gpu_kinds_host_and_lists_the_kinds():
    import os

    from arelbo.planning.kinds import default_cores, device_kinds

    kinds = device_kinds()
    assert default_cores("cpu-2core") == os.cpu_count()
    for kind, row in kinds.items():
        if "projected" in row:  # a GPU kind: its host's cores, stated in its row
            assert default_cores(kind) == row["host_cores"] >= 1
    shown = subprocess.run([sys.executable, "-m", "arelbo", "plan", "--help"], cwd=REPO, capture_output=True, text=True)
    assert shown.returncode == 0 and all(kind in shown.stdout for kind in kinds)
    for bad in ("0", "-3", "two"):
        out = subprocess.run(
            [sys.executable, "-m", "arelbo", "plan", "--cores", bad], cwd=REPO, capture_output=True, text=True
        )
        assert out.returncode == 2 and "--cores" in out.stderr and "Traceback" not in out.stderr, out.stderr


def test_against_the_runs_own_log_folder_or_an_empty_one_says_what_it_found(tmp_path):
    from arelbo.core.layout import run_logs
    from arelbo.planning.plan import format_plan

    cfg = load_config("config/quick.yaml", check_folders=False)
    jobs = [("train", {"dataset": "mnist", "model": "vae", "seed": "0"}, "benchmarks/train/mnist/vae/seed0.tsv")]
    run = run_logs(tmp_path, cfg.name, REPO / cfg.outdir)  # the quick run's folder in the logdir tmp_path
    empty = format_plan(plan(cfg, "cpu-2core", jobs, against=run), cores=2)
    assert "NONE of this plan's jobs has a benchmark file there" in empty
    # the same config name into another outdir: its own folder, whose files are not this run's
    other = run_logs(tmp_path, cfg.name, tmp_path / "elsewhere") / "benchmarks" / "train" / "mnist" / "vae"
    other.mkdir(parents=True)
    (other / "seed0.tsv").write_text("s\th:m:s\tmax_rss\n90.0\t0:01:30\t800\n")
    assert "NONE of this plan's jobs" in format_plan(plan(cfg, "cpu-2core", jobs, against=run), cores=2)
    bench = run / "benchmarks" / "train" / "mnist" / "vae"
    bench.mkdir(parents=True)
    (bench / "seed0.tsv").write_text("s\th:m:s\tmax_rss\n90.0\t0:01:30\t800\n")
    for folder in (tmp_path, run):  # the logdir, or the run's own folder in it
        out = subprocess.run(
            [sys.executable, "-m", "arelbo", "plan", "--configfile", "config/quick.yaml", "--against", str(folder)],
            cwd=REPO,
            capture_output=True,
            text=True,
        )
        assert out.returncode == 0, out.stderr[-2000:]
        assert "1 planned job(s) have a benchmark file there" in out.stdout, out.stdout[-1500:]


def test_every_option_of_every_command_says_what_it_is_for():
    import argparse

    from arelbo import cli

    parser = cli.build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    silent = [
        f"arelbo {name} {action.option_strings or action.dest}"
        for name, sub in commands.choices.items()
        for action in sub._actions
        if not isinstance(action, argparse._HelpAction) and not action.help
    ]
    assert not silent, silent
    assert subprocess.run(
        [sys.executable, "-m", "arelbo", "--version"], cwd=REPO, capture_output=True, text=True
    ).stdout.startswith("arelbo ")
