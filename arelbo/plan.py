"""`arelbo plan`: what a config will cost on a device kind, before it is submitted.

The job list is the workflow's own: Snakemake's dry run of the config (one source of truth for the
DAG), each job with its rule and wildcards. Each job's size comes from the config (epochs, images,
samples, components) and its per-image cost from the device kind's measured row of
`arelbo/reference/costs.yaml`. Jobs whose cost was not measured on that kind are listed as such and
left out of the total: a projection never guesses.
"""
from __future__ import annotations

import math
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from .layout import scored_samplers, sweep_group_rule

COSTS = Path(__file__).with_name("reference") / "costs.yaml"
CELEBA_SPLITS = {"train": 162770, "val": 19867, "test": 19962}   # SPEC §1, the official partition
MNIST_TEST = 10000
LIGHT_RULES = {"table", "comparison_plot", "claims", "training_curves", "resolved_config", "figure"}


def device_costs(kind: str) -> dict:
    from .config import ConfigError

    table = yaml.safe_load(COSTS.read_text())
    if kind not in table:
        raise ConfigError(f"no measured costs for device kind {kind!r}; measured kinds: {', '.join(table)}. "
                       f"Run `make bench` and a small config on it and add its row to {COSTS}")
    return table[kind]


def split_size(cfg, dataset: str, split: str) -> int:
    """Images in a split as the config uses it (its limit applied to the official size)."""
    if dataset == "mnist":
        full = {"train": 60000 - cfg.data.mnist.val_size, "val": cfg.data.mnist.val_size, "test": MNIST_TEST}[split]
    else:
        full = CELEBA_SPLITS[split]
    limit = getattr(getattr(cfg.data, dataset).limit, split)
    return min(full, limit) if limit else full


@dataclass
class JobCost:
    rule: str
    seconds: float | None   # None: not measured on this device kind
    gpu: bool


def _per(costs: dict, key: str, dataset: str | None = None):
    value = costs.get(key)
    return value.get(dataset) if isinstance(value, dict) else value


def job_cost(cfg, costs: dict, rule: str, wildcards: dict[str, str]) -> JobCost:
    """Projected seconds of one planned job (start-up included)."""
    start = costs["job_startup_s"]
    ds = wildcards.get("dataset", "mnist")
    s3 = cfg.section3
    n_s3 = min(s3.train_limit or 10**9, split_size(cfg, "mnist", "train"))
    seconds: float | None
    if rule == "train":
        per = _per(costs, "train_image_s", ds)
        settings = getattr(cfg.train, ds)
        images = settings.epochs * (split_size(cfg, ds, "train") + split_size(cfg, ds, "val") / 3)
        seconds = None if per is None else start + per * images
    elif rule.startswith("sweep_train"):
        k = 1 if rule == "sweep_train" else sum(1 for p in _grid(cfg) if sweep_group_rule(p.group) == rule)
        seconds = start + k * costs["section3_image_s"] * s3.train.epochs * n_s3
    elif rule == "sweep_criteria":
        seconds = start + costs["criteria_image_s"] * n_s3
    elif rule == "encode":
        per = _per(costs, "encode_image_s", ds)
        seconds = None if per is None else start + per * sum(split_size(cfg, ds, s) for s in ("train", "val", "test"))
    elif rule == "fit_estimator":
        est = wildcards.get("pkl_estimator", "")
        components = int(est[3:]) if est.startswith("gmm") else 0
        dim = 16 if ds == "mnist" else 64
        seconds = start + costs["gmm_point_component_dim_s"] * split_size(cfg, ds, "train") * components * dim
    elif rule == "fit_second_stage" or rule.startswith("fit_second_stages_"):
        # second_stage.batched: one job fits every model of the dataset (one start-up, K × the compute)
        ss = cfg.second_stage
        ds = rule.removeprefix("fit_second_stages_") if rule != "fit_second_stage" else ds
        k = 1 if rule == "fit_second_stage" else len(cfg.models)   # the 2nd VAE needs no prior: every model
        scale = (ss.hidden / 256) ** 2
        seconds = start + k * costs["second_stage_image_s"] * scale * ss.epochs * split_size(cfg, ds, "train")
    elif rule == "sample":
        per = _per(costs, "decode_image_s", ds)
        seconds = None if per is None else start + per * cfg.fid.n_samples
    elif rule == "metric_fid":
        n = cfg.fid.n_samples
        seconds = (start + costs["fid_fixed_s"] + costs["inception_image_s"] * n
                   + (costs["frechet_full_rank_s"] if n > 2048 else 0.0))
    elif rule.startswith("sample_and_score_"):
        # fid.batched: every sampler of one model in one job — one start-up and one Inception build
        # (in fid_fixed_s), then each sampler's decode and features, as its per-cell jobs would
        per = _per(costs, "decode_image_s", ds)
        n = cfg.fid.n_samples
        k = len(scored_samplers(cfg.estimators, ds, has_prior=not rule.endswith("_without_prior")))
        seconds = None if per is None else (
            start + costs["fid_fixed_s"]
            + k * (per * n + costs["inception_image_s"] * n + (costs["frechet_full_rank_s"] if n > 2048 else 0.0)))
    elif rule == "metric_mse":
        enc, dec = _per(costs, "encode_image_s", ds), _per(costs, "decode_image_s", ds)
        seconds = None if enc is None or dec is None else start + (enc + dec) * split_size(cfg, ds, "test")
    elif rule == "fid_reference":
        n = cfg.fid_reference_count(ds) or split_size(cfg, ds, cfg.fid.reference_split)
        seconds = start + costs["inception_image_s"] * n
    elif rule in LIGHT_RULES:
        seconds = costs["light_job_s"]
    else:
        seconds = costs["light_job_s"]   # provisioning and bookkeeping rules
    gpu = rule not in LIGHT_RULES | {"fit_estimator"} and not rule.startswith(("provision", "dataset", "all"))
    return JobCost(rule, seconds, gpu)


def _grid(cfg):
    from .layout import grid_points

    return grid_points(cfg.section3) if "mnist" in cfg.datasets else []


_JOB = re.compile(r"^(?:local)?rule (\w+):\n(?P<body>(?:    .*\n?)*)", re.M)


def planned_jobs(config_files: list[str], extra: list[str] = (), repo: Path | None = None) -> list[tuple[str, dict]]:
    """(rule, wildcards) of every job Snakemake would run for these configs, from its dry run
    against an empty outdir (the whole DAG, as on a fresh machine)."""
    import tempfile

    repo = repo or Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "snakemake", "-n", "--forceall", "--cores", "1"]
        for f in config_files:
            cmd += ["--configfile", str(Path(f).resolve())]
        cmd += ["--config", f"outdir={tmp}/out", f"logdir={tmp}/logs", *extra]
        out = subprocess.run(cmd, cwd=repo, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"the workflow's dry run failed:\n{out.stderr[-3000:]}")
    jobs = []
    for m in _JOB.finditer(out.stdout):
        found = re.search(r"^    wildcards: (.*)$", m.group("body"), re.M)
        wildcards = dict(kv.split("=", 1) for kv in found.group(1).split(", ")) if found else {}
        jobs.append((m.group(1), wildcards))
    return jobs


def plan(cfg, kind: str, jobs: list[tuple[str, dict]]) -> dict:
    """Per rule: jobs, projected job-seconds (None where not measured); totals and GPU-hours."""
    costs = device_costs(kind)
    per_rule: dict[str, dict] = {}
    for rule, wildcards in jobs:
        if rule == "all":
            continue
        c = job_cost(cfg, costs, rule, wildcards)
        row = per_rule.setdefault(rule, {"jobs": 0, "seconds": 0.0, "unmeasured": 0, "gpu": c.gpu})
        row["jobs"] += 1
        if c.seconds is None:
            row["unmeasured"] += 1
        else:
            row["seconds"] += c.seconds
    total = sum(r["seconds"] for r in per_rule.values())
    gpu_s = sum(r["seconds"] for r in per_rule.values() if r["gpu"])
    return {"kind": kind, "measured": costs.get("measured", ""), "threads_per_job": costs["threads_per_job"],
            "rules": per_rule, "job_seconds": total,
            "gpu_hours": gpu_s / 3600.0, "unmeasured_jobs": sum(r["unmeasured"] for r in per_rule.values())}


def format_plan(result: dict, cores: int) -> str:
    width = max([len("rule"), *map(len, result["rules"])])
    lines = [f"device kind {result['kind']} (costs measured {result['measured'].strip()})", "",
             f"{'rule':{width}s} {'jobs':>6s} {'job-hours':>10s}  note"]
    for rule, r in sorted(result["rules"].items(), key=lambda kv: -kv[1]["seconds"]):
        note = f"{r['unmeasured']} job(s) not measured on this kind, left out" if r["unmeasured"] else ""
        lines.append(f"{rule:{width}s} {r['jobs']:6d} {r['seconds'] / 3600:10.2f}  {note}")
    # the costs hold for jobs of the measured thread count: that many cores per job at a time
    threads_per_job = int(result["threads_per_job"])
    slots = max(1, cores // threads_per_job)
    wall = result["job_seconds"] / slots
    lines += ["", f"total {result['job_seconds'] / 3600:.2f} job-hours; on {cores} cores ({slots} jobs of "
                  f"{threads_per_job} threads at a time) ≈ {wall / 3600:.2f} h wall "
                  f"({math.ceil(wall / 60)} min); hours of GPU rules (on the config's device) {result['gpu_hours']:.2f}"]
    if result["unmeasured_jobs"]:
        lines.append(f"NOT included: {result['unmeasured_jobs']} job(s) whose cost was never measured on "
                     f"{result['kind']} — the total is a lower bound")
    return "\n".join(lines)
