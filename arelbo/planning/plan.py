"""`arelbo plan`: what a config will cost on a device kind, before it is submitted.

The job list is the workflow's own: the DAG Snakemake builds for the config (arelbo/planning/dag.py,
through Snakemake's Python API: one source of truth for the DAG), each job with its rule, wildcards and
resources; whether a job is a GPU job is its rule's `gpu` resource. Each job's size comes from the
config (epochs, images, samples, components; split sizes from arelbo.stages.data) and its cost from
the device kind's row of `arelbo/reference/costs.yaml`: measured per-image costs, or — for a GPU kind
not measured yet — per-step costs projected from the operator, launch and flop counts of the real
steps (arelbo/planning/projection.py) and the row's stated assumptions, labelled PROJECTED wherever
shown. A measured row with a cost it never measured (the CelebA nets on the 2-core CPU) leaves those
jobs out of the total and says so: it never borrows another kind's numbers.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from arelbo.core.layout import SECTION3_GROUPS, scored_samplers, section3_group_rule
from arelbo.core.registry import DATASETS
from arelbo.planning.dag import PlannedJob, every_rule, workflow_dag
from arelbo.planning.kinds import COSTS, device_kinds
from arelbo.stages.data import OFFICIAL_SPLIT_SIZES

# The workflow's default target: a job that runs nothing, left out of a plan.
TARGET_RULE = "all"


# What the workflow's heavy rules ask for (`threads: 2`); a planned job carries its rule's own count,
# a bare (rule, wildcards) tuple is taken to ask for this many.
RULE_THREADS = 2


def thread_slowdown(costs: dict, threads: int) -> float:
    """How much longer a job's work takes with `threads` torch threads than with the row's
    `threads_per_job` (what its costs were measured with): Amdahl's law with the row's measured
    `parallel_fraction` p, (1 - p) + p * measured / threads (below 1: faster). Start-up does not scale."""
    measured = int(costs["threads_per_job"])
    p = float(costs.get("parallel_fraction", 0.0))
    return (1 - p) + p * measured / threads


def device_costs(kind: str) -> dict:
    from arelbo.core.config import ConfigError

    table = device_kinds()
    if kind not in table:
        raise ConfigError(
            f"no measured costs for device kind {kind!r}; measured kinds: {', '.join(table)}. "
            f"Run `make bench` and a small config on it and add its row to {COSTS}"
        )
    return table[kind]


def split_size(cfg, dataset: str, split: str) -> int:
    """Images in a split as the config uses it (its limit applied to the official size)."""
    official = OFFICIAL_SPLIT_SIZES[dataset]
    if dataset == "mnist":  # validation: the last val_size images of the official training set
        val = cfg.data.mnist.val_size
        full = {"train": official["train"] - val, "val": val, "test": official["test"]}[split]
    else:
        full = official[split]
    limit = getattr(getattr(cfg.data, dataset).limit, split)
    return min(full, limit) if limit else full


@dataclass
class JobCost:
    rule: str
    seconds: float | None  # None: not measured on this device kind
    gpu: bool
    device_seconds: float = 0.0  # projected kinds: the part the GPU itself is busy (a floor on wall time)
    fixed_seconds: float = 0.0  # the part no thread count changes: the job's start-up (all of a light job)


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
        from arelbo.planning import projection
        from arelbo.stages.train import model_hparams, model_precision

        settings = getattr(self.cfg.train, ds)
        # a projected kind is a GPU: each model at the precision it trains at there
        precision = model_precision(self.cfg, ds, model, "cuda")
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
        """The Fréchet distance of one FID and its standard error as fid.uncertainty says: the delta
        method's pass, or fid.bootstrap_resamples resamples. Below N = 2049 both work on N×N
        matrices (their cost scales as (N/2048)³), and the distance itself is counted in fid_fixed_s."""
        small = 1.0 if n > 2048 else (n / 2048) ** 3
        seconds = self.costs["frechet_full_rank_s"] if n > 2048 else 0.0
        method = self.cfg.fid.uncertainty
        if method == "delta":
            seconds += self.costs["delta_se_s"] * small
        elif method == "bootstrap":
            seconds += self.cfg.fid.bootstrap_resamples * self.costs["bootstrap_resample_s"] * small
        if self.projected:
            self.busy += seconds  # float64 eigensolvers on the job's device
        return seconds


def _sum(*parts):
    return None if any(p is None for p in parts) else sum(parts)


@dataclass
class _Job:
    """One job as its cost function sees it: the config, the device kind's row, the job's rule and
    wildcards, and the work done so far (`work.busy`: its device time on a projected kind)."""

    cfg: object
    costs: dict
    rule: str
    wildcards: dict[str, str]
    work: _Work

    @property
    def start(self) -> float:
        return self.costs["job_startup_s"]

    @property
    def ds(self) -> str:
        return self.wildcards.get("dataset", "mnist")

    @property
    def model(self) -> str:
        return self.wildcards.get("model", "vae")

    @property
    def n_s3(self) -> int:
        """Images a Section 3 model trains on (an epoch), its criteria are computed on."""
        return min(self.cfg.section3.train_limit or 10**9, split_size(self.cfg, "mnist", "train"))


def _train(job: _Job) -> float | None:
    settings = getattr(job.cfg.train, job.ds)
    images = settings.epochs * (split_size(job.cfg, job.ds, "train") + split_size(job.cfg, job.ds, "val") / 3)
    return _sum(job.start, job.work.train(job.ds, job.model, images))


def _section3_point(job: _Job) -> float:
    group = job.wildcards["point"].rsplit("/", 1)[0]
    return job.start + job.work.section3(group, 1, job.cfg.section3.train.epochs * job.n_s3)


def _section3_group(group: str, job: _Job) -> float:
    # section3.batched: one job trains every grid point of the group
    k = sum(p.group == group for p in _grid(job.cfg))
    return job.start + job.work.section3(group, k, job.cfg.section3.train.epochs * job.n_s3)


def _section3_criteria(job: _Job) -> float:
    return job.start + job.costs["criteria_image_s"] * job.n_s3


def _encode(job: _Job) -> float | None:
    images = sum(split_size(job.cfg, job.ds, s) for s in ("train", "val", "test"))
    return _sum(job.start, job.work.forward("encode", job.ds, job.model, images))


def _fit_estimator(job: _Job) -> float:
    est = job.wildcards.get("pkl_estimator", "")
    components = int(est[3:]) if est.startswith("gmm") else 0
    dim = 16 if job.ds == "mnist" else 64
    images = split_size(job.cfg, job.ds, "train")
    return job.start + job.costs["gmm_point_component_dim_s"] * images * components * dim


def _second_stage(job: _Job, dataset: str | None = None) -> float:
    # second_stage.batched (`dataset` given): one job fits every model of the dataset (one start-up,
    # K × the compute); the 2nd VAE needs no prior, so K is every model
    ds, k = (job.ds, 1) if dataset is None else (dataset, len(job.cfg.models))
    ss = job.cfg.second_stage
    return job.start + job.work.second_stage(ds, k, ss.epochs * split_size(job.cfg, ds, "train"))


def _sample(job: _Job) -> float | None:
    return _sum(job.start, job.work.forward("decode", job.ds, job.model, job.cfg.fid.n_samples))


def _metric_fid(job: _Job) -> float:
    n = job.cfg.fid.n_samples
    return job.start + job.costs["fid_fixed_s"] + job.work.inception(job.ds, n) + job.work.frechet(n)


def _sample_and_score(has_prior: bool, job: _Job) -> float | None:
    # fid.batched: every sampler of one model in one job — one start-up and one Inception build (in
    # fid_fixed_s), then each sampler's decode, features and distance, as its per-cell jobs would
    n = job.cfg.fid.n_samples
    k = len(scored_samplers(job.cfg.estimators, job.ds, has_prior=has_prior))
    decode = job.work.forward("decode", job.ds, job.model, n)
    seconds = (
        None
        if decode is None
        else job.start + job.costs["fid_fixed_s"] + k * (decode + job.work.inception(job.ds, n) + job.work.frechet(n))
    )
    job.work.busy *= k  # one sampler's device time was counted above; the job runs k of them
    return seconds


def _metric_mse(job: _Job) -> float | None:
    images = split_size(job.cfg, job.ds, "test")
    encode = job.work.forward("encode", job.ds, job.model, images)
    return _sum(job.start, encode, job.work.forward("decode", job.ds, job.model, images))


def _fid_reference(job: _Job) -> float:
    n = job.cfg.fid_reference_count(job.ds) or split_size(job.cfg, job.ds, job.cfg.fid.reference_split)
    return job.start + job.work.inception(job.ds, n)


def _light(job: _Job) -> float:
    # mostly start-up: downloads, dataset caches, the resolved config, tables, plots, figures, claims
    return job.costs["light_job_s"]


LIGHT_RULES = {
    "provision_mnist",
    "provision_inception",
    "prepare_dataset",
    "resolved_config",
    "table",
    "comparison_plot",
    "training_curves",
    "figure",
    "claims",
    "measured_costs",
}
# The cost of a job, by its rule: every rule of the workflow but its target (TARGET_RULE), each named
# (tests/test_plan.py checks this set against the rules of the workflow's DAGs).
RULE_COSTS: dict[str, Callable[[_Job], float | None]] = {
    "train": _train,
    "section3_train": _section3_point,
    **{section3_group_rule(group): partial(_section3_group, group) for group in SECTION3_GROUPS},
    "section3_criteria": _section3_criteria,
    "encode": _encode,
    "fit_estimator": _fit_estimator,
    "fit_second_stage": _second_stage,
    **{f"fit_second_stages_{ds}": partial(_second_stage, dataset=ds) for ds in DATASETS},
    "sample": _sample,
    "metric_fid": _metric_fid,
    **{
        f"sample_and_score_{ds}_{prior}_prior": partial(_sample_and_score, prior == "with")
        for ds in DATASETS
        for prior in ("with", "without")
    },
    "metric_mse": _metric_mse,
    "fid_reference": _fid_reference,
    **dict.fromkeys(LIGHT_RULES, _light),
}


def rule_uses_gpu(rule: str) -> bool:
    """The rule's `gpu` resource in the workflow (every rule it can define: `dag.every_rule`)."""
    rules = every_rule()
    if rule not in rules:
        raise ValueError(f"the workflow has no rule {rule!r}")
    gpu = rules[rule].get("gpu")
    if gpu is None and "gpu" in rules[rule]:
        raise ValueError(f"rule {rule!r}: its gpu resource depends on the job; pass the job's")
    return bool(gpu)


def job_cost(cfg, costs: dict, rule: str, wildcards: dict[str, str], gpu: bool | None = None) -> JobCost:
    """Projected seconds of one planned job (start-up included). `gpu`: whether the job runs on the
    config's device, its `gpu` resource (a planned job's own); None: its rule's in the workflow."""
    if rule not in RULE_COSTS:
        raise ValueError(f"no cost for rule {rule!r}: add it to RULE_COSTS in {__name__}")
    job = _Job(cfg, costs, rule, wildcards, _Work(cfg, costs))
    seconds = RULE_COSTS[rule](job)
    fixed = costs["light_job_s"] if rule in LIGHT_RULES else job.start
    return JobCost(rule, seconds, rule_uses_gpu(rule) if gpu is None else gpu, job.work.busy, fixed)


def _grid(cfg):
    from arelbo.core.layout import grid_points

    return grid_points(cfg.section3) if "mnist" in cfg.datasets else []


def planned_jobs(config_files: list[str], extra: list[str] = (), repo: Path | None = None) -> list[PlannedJob]:
    """Every job Snakemake would run for these configs (merged in order; `extra`: `KEY=VALUE` config
    entries, as after `snakemake --config`), the whole DAG as on a fresh machine, in an order Snakemake
    could run them: (rule, wildcards, benchmark, resources) each, `benchmark` the job's benchmark file
    relative to the run's log folder (`benchmarks/...`, None for rules without one) and
    `resources` its `gpu` and `gpu_slots`. Raises RuntimeError with Snakemake's message if the
    workflow does not build."""
    return workflow_dag(config_files, extra, repo).jobs


def plan(
    cfg,
    kind: str,
    jobs: list[tuple],
    against: Path | None = None,
    max_threads: int | None = None,
    cores: int | None = None,
) -> dict:
    """Per rule: jobs, projected job-seconds (None where not measured); totals and GPU-hours. `jobs`:
    (rule, wildcards[, benchmark[, resources]]) each, as `planned_jobs` gives them. With
    `against` (the log folder of a finished run of the same config, arelbo.core.layout.run_logs), each
    job's benchmark file there gives its measured seconds beside the planned ones: the plan checked
    against the run.
    Each job runs with its rule's threads, at most `max_threads` (Snakemake's --max-threads; make quick
    runs 1-thread jobs) and `cores` (as Snakemake's --cores lowers them); its work is scaled from the
    row's `threads_per_job` by `thread_slowdown`."""
    from arelbo.reporting.costs import benchmark_seconds

    costs = device_costs(kind)

    def threads_of(job) -> int:
        asked = job.threads if isinstance(job, PlannedJob) else RULE_THREADS
        return max(1, min(asked, max_threads or asked, cores or asked))

    # the wall time's slots: the threads of the jobs that do the work (a light job's are its own affair,
    # e.g. prepare_dataset's decoding processes)
    threads = max((threads_of(job) for job in jobs if job[0] not in LIGHT_RULES | {TARGET_RULE}), default=1)
    per_rule: dict[str, dict] = {}
    for job in jobs:
        rule, wildcards, *rest = job[:4]
        if rule == TARGET_RULE:
            continue
        slowdown = thread_slowdown(costs, threads_of(job))
        resources = rest[1] if len(rest) > 1 else None  # a planned job's; else its rule's in the workflow
        c = job_cost(cfg, costs, rule, wildcards, gpu=None if resources is None else bool(resources.get("gpu")))
        if c.seconds is not None:
            c.seconds = c.fixed_seconds + (c.seconds - c.fixed_seconds) * slowdown
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
        "threads_per_job": threads,
        "measured_threads": int(costs["threads_per_job"]),
        "gpu_slots": costs.get("gpu_slots"),
        "rules": per_rule,
        "job_seconds": total,
        "gpu_seconds": gpu_s,
        "device_busy_seconds": sum(r["busy"] for r in per_rule.values()),
        "gpu_hours": gpu_s / 3600.0,
        "unmeasured_jobs": sum(r["unmeasured"] for r in per_rule.values()),
        "against": str(against) if against is not None else None,
        "against_matched": sum(r["ran"] for r in per_rule.values()),
    }


def wall_seconds(result: dict, cores: int) -> float:
    """Wall time with `cores` cores: the job-seconds over the jobs that fit at once (cores / the
    threads each job runs with, as Snakemake's --cores does); on a projected GPU kind also the
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
    if threads_per_job != result.get("measured_threads", threads_per_job):
        lines.append(
            f"jobs of {threads_per_job} thread(s), costs measured with {result['measured_threads']}: each "
            "job's work scaled by the row's parallel_fraction (Amdahl), its start-up not"
        )
    if against and not result.get("against_matched"):
        lines.append(
            f"against {against}: NONE of this plan's jobs has a benchmark file there; pass the run's logdir "
            "(the config's `logdir`, e.g. logs), which holds <config name>-<hash>/benchmarks/, with the "
            "run's own config files (its outdir names the folder)"
        )
    elif against:
        ran = [r for r in result["rules"].values() if r["ran"]]
        n_ran, planned, measured = (sum(r[k] for r in ran) for k in ("ran", "ran_planned", "ran_seconds"))
        lines.append(
            f"against {against}: {n_ran} planned job(s) have a benchmark file there; planned "
            f"{planned / 3600:.3f} job-hours, ran {measured / 3600:.3f}"
            + (f" (ran/planned {measured / planned:.2f})" if planned else "")
        )
    return "\n".join(lines)
