"""The Snakemake DAG: dry runs of the paper config, and the suite's per-cell end-to-end run
(tests/e2e_run.py) read back."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def snakemake(*args: str, timeout: int = 1500) -> subprocess.CompletedProcess:
    # below pytest-timeout's 1800 s (pyproject.toml), so that a hung run fails with its own output
    return subprocess.run(
        [sys.executable, "-m", "snakemake", *args], cwd=REPO, capture_output=True, text=True, timeout=timeout
    )


def job_counts(output: str) -> dict[str, int]:
    table = output.split("Job stats:")[1].split("total")[0]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)\s*$", table, re.M)}


def test_paper_config_dry_run_lists_26_trainings(tmp_path):
    result = snakemake("-n", "--cores", "8", "--config", f"outdir={tmp_path}/out", f"logdir={tmp_path}/logs")
    assert result.returncode == 0, result.stderr[-3000:]
    counts = job_counts(result.stdout)
    assert counts["train"] == 26  # 13 models × {mnist, celeba} × one seed


def test_wildcards_are_constrained_to_configured_ids(tmp_path):
    result = snakemake(
        f"{tmp_path}/out/models/mnist/not_a_model/seed0/model.pt",
        "-n",
        "--cores",
        "1",
        "--configfile",
        "config/ci.yaml",
        "--config",
        f"outdir={tmp_path}/out",
        f"logdir={tmp_path}/logs",
    )
    assert result.returncode != 0
    assert (
        "MissingRuleException" in result.stdout + result.stderr or "No rule to produce" in result.stdout + result.stderr
    )


def test_table_targets_build_the_whole_evaluation_dag(tmp_path):
    result = snakemake(
        f"{tmp_path}/out/table3.tex",
        f"{tmp_path}/out/table4.tex",
        "-n",
        "--cores",
        "8",
        "--config",
        f"outdir={tmp_path}/out",
        f"logdir={tmp_path}/logs",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    counts = job_counts(result.stdout)
    # per dataset: 13 models -> 13 encodings, 13 MSEs, 13 second stages, 10 priors (no prior for ae, rae,
    # rae_gp) and the GMMs of the paper's columns (GMM-10; GMM-10 and GMM-100 for CelebA), with a sample and
    # an FID for each, plus 13·2 interpolations
    assert counts["train"] == counts["encode"] == counts["metric_mse"] == counts["fit_second_stage"] == 26
    assert counts["fit_estimator"] == (10 + 13) + (10 + 26)
    assert counts["sample"] == counts["metric_fid"] == (10 + 26 + 26) + (10 + 39 + 26)
    assert counts["table"] == 2  # Tables 3 and 4


def test_several_seeds_multiply_every_seeded_job_and_feed_one_claims_job(tmp_path):
    """`seeds: [0, 1, 2]` (the multi-seed run the claims' Welch tests are for): each seed is trained,
    sampled and scored, and the one claims job reads the tables built from all of them."""
    out = tmp_path / "out"
    result = snakemake(
        "-n",
        "--cores",
        "8",
        "--configfile",
        "config/ci.yaml",
        "--config",
        "seeds=[0,1,2]",
        f"outdir={out}",
        f"logdir={tmp_path}/logs",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    counts = job_counts(result.stdout)
    one = job_counts(
        snakemake(
            "-n",
            "--cores",
            "8",
            "--configfile",
            "config/ci.yaml",
            "--config",
            f"outdir={out}",
            f"logdir={tmp_path}/logs",
        ).stdout
    )
    for rule in (
        "train",
        "encode",
        "metric_mse",
        "sample_and_score_mnist_with_prior",
        "sample_and_score_celeba_without_prior",
        "section3_train_table1_stochastic",
        "section3_train_table5",
        "section3_criteria",
    ):
        assert counts[rule] == 3 * one[rule], rule
    assert counts["claims"] == one["claims"] == 1 and counts["table"] == one["table"] == 4


def test_paper_config_dry_run_lists_the_section3_grid(tmp_path):
    result = snakemake(
        f"{tmp_path}/out/table1.tex",
        f"{tmp_path}/out/table5.tex",
        "-n",
        "--cores",
        "8",
        "--config",
        f"outdir={tmp_path}/out",
        f"logdir={tmp_path}/logs",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    counts = job_counts(result.stdout)
    # Table 1: 11 σx² × 2 encodings; Table 5: 21 σz² — each point trained and evaluated by its own job
    assert counts["section3_train"] == counts["section3_criteria"] == 22 + 21
    assert counts["table"] == 2 and "train" not in counts  # Tables 1 and 5; no Table 3 model


def test_batched_paper_grid_trains_one_job_per_group_into_the_same_files(tmp_path):
    # section3.batched: the 43 points train in 3 jobs (Table 1 per encoding, Table 5) and every point
    # keeps its own model, criteria job and place in the tables.
    overlay = tmp_path / "batched.yaml"
    overlay.write_text("section3:\n  batched: true\n")
    targets = (f"{tmp_path}/out/table1.tex", f"{tmp_path}/out/table5.tex")
    flags = ("-n", "--cores", "8", "--config", f"outdir={tmp_path}/out", f"logdir={tmp_path}/logs")
    result = snakemake(*targets, *flags, "--configfile", str(overlay))
    assert result.returncode == 0, result.stderr[-3000:]
    counts = job_counts(result.stdout)
    assert "section3_train" not in counts and counts["section3_criteria"] == 43
    assert counts["section3_train_table1_stochastic"] == counts["section3_train_table1_deterministic"] == 1
    assert counts["section3_train_table5"] == 1
    planned = set(re.findall(r"output: (.*)", result.stdout))
    models = {f for line in planned for f in line.split(", ") if f.endswith("/model.pt")}
    plain = snakemake(*targets, *flags)
    assert models == {
        f for line in re.findall(r"output: (.*)", plain.stdout) for f in line.split(", ") if f.endswith("/model.pt")
    }
    assert len(models) == 43


def test_batched_evaluation_samples_and_scores_each_model_in_one_job_into_the_same_files(tmp_path):
    # fid.batched on the paper config: one job per (dataset, model) instead of one sample and one FID
    # job per cell; second_stage.batched: one job per dataset fits every model's second stage. Both
    # plan exactly the same estimator, sample and metric files as the per-cell layout.
    overlay = tmp_path / "batched.yaml"
    overlay.write_text("fid:\n  batched: true\nsecond_stage:\n  batched: true\n")
    flags = ("-n", "--cores", "8", "--config", f"outdir={tmp_path}/out", f"logdir={tmp_path}/logs")
    batched = snakemake(*flags, "--configfile", str(overlay))
    assert batched.returncode == 0, batched.stderr[-3000:]
    counts = job_counts(batched.stdout)
    assert "sample" not in counts and "metric_fid" not in counts
    # 10 models with a prior and 3 without, on each dataset
    assert counts["sample_and_score_mnist_with_prior"] == counts["sample_and_score_celeba_with_prior"] == 10
    assert counts["sample_and_score_mnist_without_prior"] == counts["sample_and_score_celeba_without_prior"] == 3
    plain = snakemake(*flags)
    counts_plain = job_counts(plain.stdout)
    # MNIST: prior (10 models) + 2ndVAE, GMM-10, two interpolations (13 each); CelebA adds GMM-100
    assert counts_plain["sample"] == counts_plain["metric_fid"] == (10 + 4 * 13) + (10 + 5 * 13)
    assert "fit_second_stage" not in counts and counts_plain["fit_second_stage"] == 26
    assert counts["fit_second_stages_mnist"] == counts["fit_second_stages_celeba"] == 1

    def evaluation_files(stdout):
        return {
            f
            for line in re.findall(r"output: (.*)", stdout)
            for f in line.split(", ")
            if "/samples/" in f or "/fid_" in f or f.endswith("/2ndvae.pt")
        }

    files = evaluation_files(batched.stdout)
    assert files == evaluation_files(plain.stdout)
    # .npz, .png and fid_*.json of every cell, and every model's second stage
    assert len(files) == 3 * counts_plain["sample"] + 26


@pytest.fixture(scope="module")
def run(e2e_run):
    # The workflow's whole default target on the paper configuration with only sizes changed: Tables
    # 1, 3, 4, 5, Figures 1-3, claims, costs (the suite's per-cell end-to-end run, shared with
    # tests/test_paper_config.py: tests/e2e_run.py)
    failure = e2e_run.failure()
    assert failure is None, failure
    return e2e_run


def _paper_shaped(path: Path):
    import pandas as pd

    return pd.read_csv(path, index_col=0, dtype=str, keep_default_na=False)


@pytest.mark.slow
def test_the_default_target_runs_end_to_end_and_fills_every_cell(run):
    """Every table, figure, claim and cost of the default target, in the per-cell layout (the batched
    layout's end-to-end run, and its own log folders and cost rows: tests/test_plugins.py)."""
    import pandas as pd

    from arelbo.core.config import load_config
    from arelbo.core.layout import run_logs

    results = run.out / "results"
    cfg = load_config(*run.configfiles)
    for n in (1, 3, 4, 5):
        assert (results / f"table{n}.tex").is_file()
        for kind in ("tidy", "paper", "vs_paper"):
            assert (results / "tables" / f"table{n}_{kind}.csv").is_file(), (n, kind)
    # Tables 3/4: one row per configured model and dataset, and a number in every cell the paper defines
    for n in (3, 4):
        table = _paper_shaped(results / "tables" / f"table{n}_paper.csv")
        assert len(table) == len(cfg.models)
        for column, cells in table.drop(columns="label").items():
            dataset, metric = column.split("/")
            for model, cell in cells.items():
                if n == 3 and metric in ("fid_prior", "kid_prior (x1e3)") and model == "ae":
                    assert cell == "–", (column, model, cell)
                else:
                    assert cell and cell != "–", (n, column, model, cell)
    for n in (1, 5):
        table = _paper_shaped(results / "tables" / f"table{n}_paper.csv")
        assert table.size and not (table == "").any().any() and not (table == "–").any().any(), table
    tex = (results / "table3.tex").read_text()
    assert cfg.name in tex and "not comparable" in tex
    for number in (1, 2, 3):
        png = results / "figures" / f"figure{number}.png"
        assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (results / "config.yaml").read_text().startswith(f"name: {cfg.name}")
    # KID next to every FID, with the sizes in the caption; every claim judged or listed as NOT RUN
    tidy3 = pd.read_csv(results / "tables" / "table3_tidy.csv")
    assert {"kid_prior", "kid_gmm10", "fid_gmm100", "kid_gmm100"} <= set(tidy3["metric"])
    assert tidy3["config_hash"].nunique() == 1 and tidy3["uncertainty"].notna().any()
    assert r"\label{tab:table3-kid}" in tex and f"$N_{{gen}} = {cfg.fid.n_samples}$" in tex
    from arelbo.reporting.claims import VERDICTS, load_claims, value_claims

    verdicts = pd.read_csv(results / "claims.csv").set_index("id")
    assert len(verdicts) == len(load_claims()["claims"]) + len(value_claims(load_claims()))
    assert set(verdicts["verdict"]) <= set(VERDICTS)
    values = verdicts[verdicts.index.str.contains(":")]
    assert (values["verdict"] == "NOT RUN").all()  # a reduced config's numbers are not comparable
    # claims on models the run does not train are listed as NOT RUN, never silently dropped; the
    # Section 3 claims are judged (two grid points: a trend cannot be decided, a threshold can)
    assert "vae" not in cfg.models and "wae_mmd" not in cfg.models
    assert verdicts.loc["vae-reconstructs-far-worse-mnist", "verdict"] == "NOT RUN"
    assert verdicts.loc["vae-reconstructs-far-worse-celeba", "verdict"] == "NOT RUN"
    assert verdicts.loc["t1-kl-rises-as-sigma-x2-falls", "verdict"] == "INCONCLUSIVE"
    assert verdicts.loc["t5-kl-far-from-zero", "verdict"] in ("PASS", "FAIL", "INCONCLUSIVE")
    assert (
        "kid_" in verdicts.loc["wae-low-prior-fid-mnist", "evidence"]
        or verdicts.loc["wae-low-prior-fid-mnist", "verdict"] == "NOT RUN"
    )
    assert (results / "claims.tex").read_text().count(r"\begin{tabular}") == 2
    # every heavy rule left a log and a benchmark, under the config's own log folder
    logs = run_logs(run.out / "logs", cfg.name, run.out / "results")
    for rule in ("train", "sweeps", "samples", "metrics", "estimators", "encode"):
        assert list((logs / rule).rglob("*.log")), rule
    assert list((logs / "benchmarks").rglob("*.tsv"))
    # the run's measured cost: one row per job that wrote a benchmark, each Table 3/4 row's jobs named
    costs = pd.read_csv(results / "costs.csv")
    assert len(costs) == len(list((logs / "benchmarks").rglob("*.tsv")))  # every job before it (it has none)
    assert {"train", "encode", "estimators", "samples", "metrics", "sweeps"} <= set(costs["stage"])
    rows = costs.dropna(subset=["model"]).groupby(["dataset", "model"])["stage"].agg(set)
    assert len(rows) == len(cfg.datasets) * len(cfg.models)
    assert all({"train", "encode", "estimators", "samples", "metrics"} <= stages for stages in rows)
    # one second stage per model, each its own job (each .pt is used above)
    second_stages = costs.loc[costs["job"].str.startswith("estimators/2ndvae")]
    assert len(second_stages) == len(cfg.datasets) * len(cfg.models) and second_stages["model"].notna().all()


@pytest.mark.slow
def test_the_plan_checked_against_the_run(run):
    """`arelbo plan --against` on a real run: every planned job that has a measured cost on the kind
    found the benchmark file the workflow wrote for it, and the run's seconds are set beside the plan's."""
    from arelbo.core.config import load_config
    from arelbo.core.layout import run_logs

    cfg = load_config(*run.configfiles)
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "arelbo",
            "plan",
            *(f"--config={f}" for f in run.configfiles),
            "--against",
            # the run's own log folder (its outdir is the run's, not the config files')
            str(run_logs(run.out / "logs", cfg.name, run.out / "results")),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    found = re.search(
        r"against .*: (\d+) planned job\(s\) have a benchmark file there; planned ([\d.]+) "
        r"job-hours, ran ([\d.]+)",
        out.stdout,
    )
    assert found, out.stdout[-3000:]
    planned_jobs_with_costs = [
        line for line in out.stdout.splitlines() if re.match(r"^(train|encode|fit_estimator|sample|metric_fid) ", line)
    ]
    assert len(planned_jobs_with_costs) == 5 and int(found.group(1)) > 0 and float(found.group(3)) > 0
    for line in planned_jobs_with_costs:
        jobs, ran = int(line.split()[1]), int(line.split()[3])
        # the CelebA stand-in jobs whose cost the 2-core row never measured are left out; the rest all ran
        assert 0 < ran <= jobs, line


@pytest.mark.slow
def test_report_holds_every_table_and_figure(run):
    from arelbo.core.config import load_config

    cfg = load_config(*run.configfiles)
    report = run.out / "report.html"
    result = snakemake(
        "--cores",
        "1",
        "--configfile",
        *map(str, run.configfiles),
        "--config",
        f"outdir={run.out}/results",
        f"logdir={run.out}/logs",
        "--report",
        str(report),
        timeout=600,
    )
    assert result.returncode == 0, (result.stdout[-3000:], result.stderr[-3000:])
    html = report.read_text(encoding="utf-8")
    expected = ["claims.csv", "costs.csv"] + [f"table{n}_paper.csv" for n in (1, 3, 4, 5)]
    expected += [f"table{n}_vs_paper.png" for n in (1, 3, 4, 5)]
    expected += [f"figure{n}.png" for n in (1, 2, 3)]
    expected += [f"training_curves_{what}.png" for what in (*cfg.datasets, "section3")]
    expected += [f"{sampler}.png" for sampler in (*cfg.estimators, "interp_mid", "interp_random")]
    missing = [name for name in expected if name not in html]
    assert not missing, f"not in the report: {missing}"
    for category in ("Claims", "Tables", "Paper comparison", "Samples", "Section 3 figures", "Training curves", "Cost"):
        assert category in html
    assert "not comparable with the paper" in html  # the captions name the (reduced) config


# Each lint `snakemake --lint` may still report, with why it stays (docs/reliability.md, "Lints").
JUSTIFIED_LINTS = {
    # the jobs' interpreter (`python -m arelbo` with Snakemake's own Python): an environment fact,
    # not a setting; tracking it would re-run every job when the venv moves
    "Shell command directly uses variable ARELBO from outside of the rule": 19,
    # the content-addressed merged config (<outdir>/configs/<sha256>.yaml): immune to other
    # invocations; the settings each output depends on are tracked per rule as params
    "Shell command directly uses variable CONFIG_FILE from outside of the rule": 18,
    # one environment for the whole workflow (pyproject/requirements.lock, environment.yml);
    # per-rule conda environments cannot be tested without conda here
    "Specify a conda environment or container for each rule.": 20,
}


def test_lints_are_only_the_justified_ones():
    result = snakemake("--lint", timeout=300)
    found: dict[str, int] = {}
    for line in result.stdout.splitlines() + result.stderr.splitlines():
        match = re.match(r"^\s*\* (.+?):?\s*$", line)
        if match:
            found[match.group(1).rstrip(":")] = found.get(match.group(1).rstrip(":"), 0) + 1
    assert found, (result.stdout[-2000:], result.stderr[-2000:])
    unexpected = {k: v for k, v in found.items() if k not in JUSTIFIED_LINTS}
    assert not unexpected, unexpected
    grown = {k: (v, JUSTIFIED_LINTS[k]) for k, v in found.items() if v > JUSTIFIED_LINTS[k]}
    assert not grown, grown


def test_celeba_gmm100_fit_is_given_the_measured_runtime(tmp_path):
    # docs/engineering-notes.md, "GMM-100 runtime": 101 EM iterations, 46 min on one core
    result = snakemake(
        "-n",
        "--cores",
        "8",
        f"{tmp_path}/out/estimators/celeba/vae/seed0/gmm100.pkl",
        f"{tmp_path}/out/estimators/mnist/vae/seed0/gmm10.pkl",
        "--config",
        f"outdir={tmp_path}/out",
        f"logdir={tmp_path}/logs",
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    jobs = result.stdout.split("rule fit_estimator:")[1:]
    runtime = {
        re.search(r"pkl_estimator=(\w+)", j).group(1): int(re.search(r"runtime=(\d+)", j).group(1)) for j in jobs
    }
    assert runtime == {"gmm100": 240, "gmm10": 60}


def test_gpu_workstation_profile_shares_the_card_and_keeps_cpu_jobs_off_it(tmp_path):
    # profiles/gpu-workstation: a CelebA training takes the whole card (4 slots), MNIST-sized GPU jobs
    # one slot each, CPU-only stages (GMM fits, tables) none.
    out = tmp_path / "out"
    result = snakemake(
        f"{out}/table1.tex",
        f"{out}/table3.tex",
        "-n",
        "--profile",
        "profiles/gpu-workstation",
        "--config",
        f"outdir={out}",
        f"logdir={tmp_path}/logs",
        "models=[vae]",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = {}
    for block in result.stdout.split("\n\n"):
        rule = re.search(r"^(?:local)?rule (\w+):", block, flags=re.M)
        output = re.search(r"output: (\S+)", block)
        if rule and output:
            slots = re.search(r"gpu_slots=(\d+)", block)
            jobs[output.group(1).rstrip(",")] = (rule.group(1), int(slots.group(1)) if slots else 0)
    by_rule = {}
    for path, (rule, slots) in jobs.items():
        by_rule.setdefault((rule, "/celeba/" in path), set()).add(slots)
    assert by_rule[("train", True)] == {4} and by_rule[("train", False)] == {1}
    for rule in ("encode", "sample", "metric_fid", "fit_second_stage", "section3_train", "section3_criteria"):
        assert by_rule[(rule, False)] == {1}, rule
    assert by_rule[("fit_estimator", False)] == {0} and by_rule[("table", False)] == {0}


def test_gpu_workstation_profile_runs_its_jobs_with_device_cuda(tmp_path):
    """The profile's `config: [device=cuda]`: its jobs read a resolved config with `device: cuda`, so a
    job that cannot use the GPU stops instead of running the GPU workload on the CPU. (Settings given
    by `--configfile` keep it; a command-line `--config` list would replace it, as the profile says.)"""
    import yaml

    out = tmp_path / "out"
    overlay = tmp_path / "where.yaml"
    overlay.write_text(yaml.safe_dump({"outdir": str(out), "logdir": str(tmp_path / "logs"), "models": ["vae"]}))
    result = snakemake(
        f"{out}/table3.tex", "-n", "-p", "--profile", "profiles/gpu-workstation", "--configfile", str(overlay)
    )
    assert result.returncode == 0, result.stderr[-3000:]
    # a dry run writes nothing: the jobs' shell commands name the content-addressed file they will read
    from arelbo.core import layout
    from arelbo.core.config import dump_config, load_config

    def read_by_jobs(output):
        return set(re.findall(r"--config '?([^' ]+/configs/\w+\.yaml)", output))

    def resolved(folder, *overlays, **overrides):
        cfg = load_config(*overlays, overrides=overrides, check_folders=False)
        return str(layout.resolved_config(folder, dump_config(cfg)))

    assert read_by_jobs(result.stdout) == {resolved(out, overlay, device="cuda")}
    # what the profile warns of: a command-line --config list replaces the profile's
    assert (
        "a `--config` on\n# the command line replaces the profile's `config` list"
        in (REPO / "profiles" / "gpu-workstation" / "config.yaml").read_text()
    )
    other = tmp_path / "other"
    result = snakemake(
        f"{other}/table3.tex", "-n", "-p", "--profile", "profiles/gpu-workstation", "--config", f"outdir={other}"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert read_by_jobs(result.stdout) == {resolved(other, outdir=str(other))}  # device: auto, the default


@pytest.mark.slow
def test_on_a_small_run_the_fid_uncertainty_decides_no_claim(run):
    """Below 2,049 generated images FID orderings are decided on KID, so the FIDs' standard errors
    enter no verdict: the run's claims are the same with them as recorded (the delta method, which
    every FID record names), three times larger (what the bootstrap gives at N ≪ D) or a third."""
    import numpy as np

    from arelbo.reporting import claims as C

    results = run.out / "results"
    tidy = C.read_tidy(results)
    fid_rows = [tidy[n][tidy[n]["metric"].str.startswith("fid")] for n in (3, 4)]  # Tables 1, 5: no FID
    methods = {m for rows in fid_rows for m in rows["uncertainty_method"]}
    assert len(methods) == 1 and next(iter(methods)).startswith("delta method"), methods
    assert all((rows["n_samples"] < 2049).all() for rows in fid_rows)
    recorded = C.judge(tidy)[["id", "verdict"]]  # evidence quotes the ± it was given, verdicts must not move

    def scaled(factor: float) -> dict:
        return {
            n: frame.assign(
                uncertainty=np.where(
                    frame["metric"].str.startswith("fid"), frame["uncertainty"] * factor, frame["uncertainty"]
                )
            )
            for n, frame in tidy.items()
        }

    for factor in (3.0, 1 / 3):
        assert C.judge(scaled(factor))[["id", "verdict"]].equals(recorded), factor


@pytest.mark.slow
def test_a_short_runs_records_say_its_trainings_had_not_converged_and_no_claim_fails_on_them(run):
    """The per-cell run trains one epoch: every Table 3/4 record carries its model's convergence (not
    converged: too few epochs to tell), and the run's claims.csv — a reduced config — has no FAIL
    resting on such a training; those it names carry the reason."""
    import pandas as pd

    from arelbo.reporting import claims as C

    results = run.out / "results"
    for n, frame in C.read_tidy(results).items():
        assert "converged" in frame and "convergence" in frame, n
        if n in (3, 4):
            assert not frame["converged"].astype(str).str.lower().isin(["true", "1"]).any()
            assert frame["convergence"].str.contains("too few to tell").all()
    verdicts = pd.read_csv(results / "claims.csv", keep_default_na=False)
    flagged = verdicts[verdicts["convergence"] != ""]
    assert len(flagged) and (flagged["verdict"] != C.FAIL).all()
    assert flagged["convergence"].str.startswith("not converged: ").all()


def test_two_overlays_merge_alike_in_arelbo_the_plan_and_a_dry_run(tmp_path):
    # `--configfile A B` is one spelling for every tool: `arelbo config`, `arelbo plan` (whose DAG
    # Snakemake's API builds) and `snakemake` itself must all parse the same merged config
    import yaml

    from arelbo.core import layout
    from arelbo.planning.dag import workflow_dag

    out, logs = tmp_path / "out", tmp_path / "logs"
    second = tmp_path / "second.yaml"
    second.write_text(f"estimators: [prior]\noutdir: {out}\nlogdir: {logs}\n")
    files = ["config/quick.yaml", str(second)]
    shown = subprocess.run(
        [sys.executable, "-m", "arelbo", "config", "--configfile", *files], cwd=REPO, capture_output=True, text=True
    )
    assert shown.returncode == 0, shown.stderr[-2000:]
    merged = yaml.safe_load(shown.stdout)
    assert (merged["name"], merged["estimators"], merged["outdir"]) == ("quick", ["prior"], str(out))

    def without_folders(text):
        return {k: v for k, v in yaml.safe_load(text).items() if k not in ("outdir", "logdir")}

    dag = workflow_dag(files)
    assert without_folders(dag.config) == without_folders(shown.stdout)
    assert {job.wildcards.get("estimator") for job in dag.jobs} <= {None, "prior", "2ndvae"} - {"2ndvae"}

    # the dry run's jobs read the content-addressed file of exactly that config, and it writes nothing
    result = snakemake("-n", "-p", "--cores", "1", "--configfile", *files, "--", str(layout.user_config(out)))
    assert result.returncode == 0, result.stderr[-3000:]
    assert str(layout.resolved_config(out, shown.stdout)) in result.stdout
    assert not out.exists() and not logs.exists()
