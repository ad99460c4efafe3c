"""`arelbo plan`: what a config will cost on a device kind, before it is submitted.

The job list is the workflow's own: Snakemake's dry run of the config (one source of truth for the
DAG), each job with its rule and wildcards. Each job's size comes from the config (epochs, images,
samples, components) and its cost from the device kind's row of `arelbo/reference/costs.yaml`:
measured per-image costs, or — for a GPU kind not measured yet — per-step costs projected from the
operator, launch and flop counts of the real steps (arelbo/projection.py) and the row's stated
assumptions, labelled PROJECTED wherever shown. A measured row with a cost it never measured (the
CelebA nets on the 2-core CPU) leaves those jobs out of the total and says so: it never borrows
another kind's numbers.
"""

from __future__ import annotations

import math
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from arelbo.core.layout import REPO_ROOT, reference_file, scored_samplers, section3_group_rule

COSTS = reference_file("costs.yaml")
CELEBA_SPLITS = {"train": 162770, "val": 19867, "test": 19962}  # SPEC §1, the official partition
MNIST_TEST = 10000
LIGHT_RULES = {"table", "comparison_plot", "claims", "training_curves", "resolved_config", "figure"}


def device_costs(kind: str) -> dict:
    from arelbo.core.config import ConfigError

    table = yaml.safe_load(COSTS.read_text())
    if kind not in table:
        raise ConfigError(
            f"no measured costs for device kind {kind!r}; measured kinds: {', '.join(table)}. "
            f"Run `make bench` and a small config on it and add its row to {COSTS}"
        )
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
    seconds: float | None  # None: not measured on this device kind
    gpu: bool
    device_seconds: float = 0.0  # projected kinds: the part the GPU itself is busy (a floor on wall time)


def _per(costs: dict, key: str, dataset: str | None = None):
    value = costs.get(key)
    return value.get(dataset) if isinstance(value, dict) else value


class _Work:
    """Seconds of one job's GPU work on a device kind: a measured row's per-image rates × images, or a
    projected row's per-step costs (arelbo/projection.py) × steps. `busy` sums the projected device
    time (the GPU's own share of the steps)."""

    def __init__(self, cfg, costs: dict):
        self.cfg, self.costs, self.projected = cfg, costs, "projected" in costs
        self.busy = 0.0

    def _steps(self, count, images: float, precision: str = "fp32") -> float:
        # a step processes count.images images of each of its count.models models
        steps = images / count.images
        self.busy += steps * (
            count.kernels * self.costs["kernel_floor_s"]
            + count.models * count.flops / (self.costs["achieved_tflops"][precision] * 1e12)
        )
        return steps * count.seconds(self.costs, precision)

    def train(self, ds: str, model: str, images: float) -> float | None:
        if not self.projected:
            per = _per(self.costs, "train_image_s", ds)
            return None if per is None else per * images
        from arelbo.core.registry import MODELS
        from arelbo.planning import projection
        from arelbo.stages.train import model_hparams

        settings = getattr(self.cfg.train, ds)
        precision = settings.precision if MODELS[model].bf16_safe else "fp32"
        count = projection.train_step(
            ds, model, settings.batch_size, settings.lr, tuple(sorted(model_hparams(self.cfg, model, ds).items()))
        )
        return self._steps(count, images, precision)

    def section3(self, group: str, k: int, images: float) -> float:
        if not self.projected:
            return k * self.costs["section3_image_s"] * images
        from arelbo.planning import projection

        s3 = self.cfg.section3
        return self._steps(projection.section3_step(group, k, s3.latent_dim, s3.train.batch_size, s3.train.lr), images)

    def second_stage(self, ds: str, k: int, images: float) -> float:
        ss = self.cfg.second_stage
        if not self.projected:
            return k * self.costs["second_stage_image_s"] * (ss.hidden / 256) ** 2 * images
        from arelbo.models.nets import ARCHITECTURES
        from arelbo.planning import projection

        count = projection.second_stage_step(k, ARCHITECTURES[ds].latent_dim, ss.hidden, ss.depth, ss.batch_size, ss.lr)
        return self._steps(count, images)

    def forward(self, part: str, ds: str, model: str, images: float) -> float | None:
        if not self.projected:
            per = _per(self.costs, f"{part}_image_s", ds)
            return None if per is None else per * images
        from arelbo.planning import projection
        from arelbo.stages.evaluate import DECODE_BATCH

        return self._steps(projection.forward_step(ds, model, DECODE_BATCH, part), images)

    def inception(self, ds: str, images: float) -> float:
        if not self.projected:
            return self.costs["inception_image_s"] * images
        from arelbo.planning import projection

        return self._steps(projection.inception_step(self.cfg.fid.batch_size, ds), images)

    def frechet(self, n: int) -> float:
        """The Fréchet distance of one FID and its bootstrap resamples (fid.bootstrap_resamples)."""
        full = self.costs["bootstrap_resample_s"]
        per_resample = full if n > 2048 else full * (n / 2048) ** 3  # an N×N eigenproblem below 2049
        seconds = (
            self.costs["frechet_full_rank_s"] if n > 2048 else 0.0
        ) + self.cfg.fid.bootstrap_resamples * per_resample
        if self.projected:
            self.busy += seconds  # float64 eigensolvers on the job's device
        return seconds


def _sum(*parts):
    return None if any(p is None for p in parts) else sum(parts)


def job_cost(cfg, costs: dict, rule: str, wildcards: dict[str, str]) -> JobCost:
    """Projected seconds of one planned job (start-up included)."""
    start = costs["job_startup_s"]
    ds = wildcards.get("dataset", "mnist")
    model = wildcards.get("model", "vae")
    s3 = cfg.section3
    n_s3 = min(s3.train_limit or 10**9, split_size(cfg, "mnist", "train"))
    work = _Work(cfg, costs)
    seconds: float | None
    if rule == "train":
        settings = getattr(cfg.train, ds)
        images = settings.epochs * (split_size(cfg, ds, "train") + split_size(cfg, ds, "val") / 3)
        seconds = _sum(start, work.train(ds, model, images))
    elif rule.startswith("section3_train"):
        if rule == "section3_train":
            group, k = wildcards["point"].rsplit("/", 1)[0], 1
        else:
            points = [p for p in _grid(cfg) if section3_group_rule(p.group) == rule]
            group, k = points[0].group, len(points)
        seconds = start + work.section3(group, k, s3.train.epochs * n_s3)
    elif rule == "section3_criteria":
        seconds = start + costs["criteria_image_s"] * n_s3
    elif rule == "encode":
        images = sum(split_size(cfg, ds, s) for s in ("train", "val", "test"))
        seconds = _sum(start, work.forward("encode", ds, model, images))
    elif rule == "fit_estimator":
        est = wildcards.get("pkl_estimator", "")
        components = int(est[3:]) if est.startswith("gmm") else 0
        dim = 16 if ds == "mnist" else 64
        seconds = start + costs["gmm_point_component_dim_s"] * split_size(cfg, ds, "train") * components * dim
    elif rule == "fit_second_stage" or rule.startswith("fit_second_stages_"):
        # second_stage.batched: one job fits every model of the dataset (one start-up, K × the compute)
        ds = rule.removeprefix("fit_second_stages_") if rule != "fit_second_stage" else ds
        k = 1 if rule == "fit_second_stage" else len(cfg.models)  # the 2nd VAE needs no prior: every model
        seconds = start + work.second_stage(ds, k, cfg.second_stage.epochs * split_size(cfg, ds, "train"))
    elif rule == "sample":
        seconds = _sum(start, work.forward("decode", ds, model, cfg.fid.n_samples))
    elif rule == "metric_fid":
        n = cfg.fid.n_samples
        seconds = start + costs["fid_fixed_s"] + work.inception(ds, n) + work.frechet(n)
    elif rule.startswith("sample_and_score_"):
        # fid.batched: every sampler of one model in one job — one start-up and one Inception build
        # (in fid_fixed_s), then each sampler's decode, features and distance, as its per-cell jobs would
        n = cfg.fid.n_samples
        k = len(scored_samplers(cfg.estimators, ds, has_prior=not rule.endswith("_without_prior")))
        decode = work.forward("decode", ds, model, n)
        seconds = (
            None
            if decode is None
            else (start + costs["fid_fixed_s"] + k * (decode + work.inception(ds, n) + work.frechet(n)))
        )
        work.busy *= k  # one sampler's device time was counted above; the job runs k of them
    elif rule == "metric_mse":
        images = split_size(cfg, ds, "test")
        seconds = _sum(start, work.forward("encode", ds, model, images), work.forward("decode", ds, model, images))
    elif rule == "fid_reference":
        n = cfg.fid_reference_count(ds) or split_size(cfg, ds, cfg.fid.reference_split)
        seconds = start + work.inception(ds, n)
    elif rule in LIGHT_RULES:
        seconds = costs["light_job_s"]
    else:
        seconds = costs["light_job_s"]  # provisioning and bookkeeping rules
    gpu = rule not in LIGHT_RULES | {"fit_estimator"} and not rule.startswith(("provision", "dataset", "all"))
    return JobCost(rule, seconds, gpu, work.busy)


def _grid(cfg):
    from arelbo.core.layout import grid_points

    return grid_points(cfg.section3) if "mnist" in cfg.datasets else []


_JOB = re.compile(r"^(?:local)?rule (\w+):\n(?P<body>(?:    .*\n?)*)", re.M)


def planned_jobs(
    config_files: list[str], extra: list[str] = (), repo: Path | None = None
) -> list[tuple[str, dict, str | None]]:
    """(rule, wildcards, benchmark) of every job Snakemake would run for these configs, from its dry
    run against an empty outdir (the whole DAG, as on a fresh machine); `benchmark` is the job's
    benchmark file relative to the log folder (`<config name>/benchmarks/...`), None for rules
    without one."""
    import tempfile

    repo = repo or REPO_ROOT
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
        bench = re.search(r"^    benchmark: (.*)$", m.group("body"), re.M)
        benchmark = str(Path(bench.group(1)).relative_to(f"{tmp}/logs")) if bench else None
        jobs.append((m.group(1), wildcards, benchmark))
    return jobs


def plan(cfg, kind: str, jobs: list[tuple], against: Path | None = None) -> dict:
    """Per rule: jobs, projected job-seconds (None where not measured); totals and GPU-hours. With
    `against` (the log folder of a finished run of the same config), each job's benchmark file there
    gives its measured seconds beside the planned ones: the plan checked against the run."""
    from arelbo.reporting.costs import benchmark_seconds

    costs = device_costs(kind)
    per_rule: dict[str, dict] = {}
    for rule, wildcards, *rest in jobs:
        if rule == "all":
            continue
        c = job_cost(cfg, costs, rule, wildcards)
        row = per_rule.setdefault(
            rule,
            {
                "jobs": 0,
                "seconds": 0.0,
                "unmeasured": 0,
                "gpu": c.gpu,
                "busy": 0.0,
                "ran": 0,
                "ran_planned": 0.0,
                "ran_seconds": 0.0,
            },
        )
        row["jobs"] += 1
        row["busy"] += c.device_seconds
        if c.seconds is None:
            row["unmeasured"] += 1
        else:
            row["seconds"] += c.seconds
        benchmark = rest[0] if rest else None
        if against is not None and benchmark and c.seconds is not None and (Path(against) / benchmark).is_file():
            row["ran"] += 1
            row["ran_planned"] += c.seconds
            row["ran_seconds"] += benchmark_seconds(Path(against) / benchmark)
    total = sum(r["seconds"] for r in per_rule.values())
    gpu_s = sum(r["seconds"] for r in per_rule.values() if r["gpu"])
    return {
        "kind": kind,
        "measured": costs.get("measured", ""),
        "projected": costs.get("projected"),
        "threads_per_job": costs["threads_per_job"],
        "gpu_slots": costs.get("gpu_slots"),
        "rules": per_rule,
        "job_seconds": total,
        "gpu_seconds": gpu_s,
        "device_busy_seconds": sum(r["busy"] for r in per_rule.values()),
        "gpu_hours": gpu_s / 3600.0,
        "unmeasured_jobs": sum(r["unmeasured"] for r in per_rule.values()),
        "against": str(against) if against is not None else None,
    }


def wall_seconds(result: dict, cores: int) -> float:
    """Wall time with `cores` cores: the job-seconds over the jobs that fit at once (cores / the
    threads a job was measured with, as Snakemake's --cores does); on a projected GPU kind also the
    GPU rules over the card's slots (profiles/gpu-workstation) and, as a floor, the time the GPU itself
    is busy — jobs can share a card's idle time, not its arithmetic."""
    slots = max(1, cores // int(result["threads_per_job"]))
    wall = result["job_seconds"] / slots
    if result.get("gpu_slots"):
        wall = max(wall, result["gpu_seconds"] / min(slots, int(result["gpu_slots"])), result["device_busy_seconds"])
    return wall


def format_plan(result: dict, cores: int) -> str:
    width = max([len("rule"), *map(len, result["rules"])])
    source = (
        f"PROJECTED, {result['projected'].strip()}"
        if result.get("projected")
        else f"costs measured {result['measured'].strip()}"
    )
    against = result.get("against")
    lines = [
        f"device kind {result['kind']} ({source})",
        "",
        f"{'rule':{width}s} {'jobs':>6s} {'job-hours':>10s}"
        + (f" {'ran':>5s} {'planned h':>9s} {'ran h':>7s} {'ran/plan':>8s}" if against else "")
        + "  note",
    ]
    for rule, r in sorted(result["rules"].items(), key=lambda kv: -kv[1]["seconds"]):
        note = f"{r['unmeasured']} job(s) not measured on this kind, left out" if r["unmeasured"] else ""
        if result.get("projected") and r["gpu"] and r["seconds"]:
            note = f"GPU busy {100 * r['busy'] / r['seconds']:.0f} % of it" if r["busy"] else ""
        line = f"{rule:{width}s} {r['jobs']:6d} {r['seconds'] / 3600:10.2f}"
        if against:
            ratio = f"{r['ran_seconds'] / r['ran_planned']:8.2f}" if r["ran"] and r["ran_planned"] else f"{'':8s}"
            line += f" {r['ran']:5d} {r['ran_planned'] / 3600:9.3f} {r['ran_seconds'] / 3600:7.3f} {ratio}"
        lines.append(f"{line}  {note}".rstrip())
    # the costs hold for jobs of the measured thread count: that many cores per job at a time
    threads_per_job = int(result["threads_per_job"])
    slots = max(1, cores // threads_per_job)
    wall = wall_seconds(result, cores)
    lines += [
        "",
        f"total {result['job_seconds'] / 3600:.2f} job-hours; on {cores} cores ({slots} jobs of "
        f"{threads_per_job} threads at a time) ≈ {wall / 3600:.2f} h wall "
        f"({math.ceil(wall / 60)} min); hours of GPU rules (on the config's device) {result['gpu_hours']:.2f}",
    ]
    if result.get("gpu_slots"):
        lines.append(
            f"the GPU itself busy {result['device_busy_seconds'] / 3600:.2f} h; GPU rules share "
            f"{result['gpu_slots']} slots of the card (profiles/gpu-workstation)"
        )
    if result["unmeasured_jobs"]:
        lines.append(
            f"NOT included: {result['unmeasured_jobs']} job(s) whose cost was never measured on "
            f"{result['kind']} — the total is a lower bound"
        )
    if against:
        ran = [r for r in result["rules"].values() if r["ran"]]
        n_ran, planned, measured = (sum(r[k] for r in ran) for k in ("ran", "ran_planned", "ran_seconds"))
        lines.append(
            f"against {against}: {n_ran} planned job(s) have a benchmark file there; planned "
            f"{planned / 3600:.3f} job-hours, ran {measured / 3600:.3f}"
            + (f" (ran/planned {measured / planned:.2f})" if planned else "")
        )
    return "\n".join(lines)
