"""What a finished run cost: Snakemake's benchmark files (`logs/<config>/benchmarks/**.tsv`, one
per job: wall seconds, peak memory, CPU seconds) read back per job, per stage and per table row.

    arelbo costs --logs logs/quick [--out results/quick/costs.csv]

A job's file sits where its rule's `benchmark:` puts it, so the path says what the job was:
`<stage>/<dataset>/<model>/seed<s>[/<part>].tsv` for the per-model stages (train, encode,
estimators, samples, metrics, evaluate), `sweeps/<point or group>/seed<s>/<train|criteria>.tsv` for
Section 3, and a single file for the one-off jobs (dataset preparation, FID reference, figures). The
per-row view sums every job a Table 3/4 row needs (training, encoding, estimator fits, sampling,
FIDs, MSE): the measured cost of that row's cells.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from arelbo.core import layout

MODEL_STAGES = ("train", "encode", "estimators", "samples", "metrics", "evaluate")
COLUMNS = ["stage", "job", "dataset", "model", "seed", "seconds", "max_rss_mb", "cpu_seconds", "file"]


def _one_job(path: Path, bench_dir: Path) -> dict:
    rel = path.relative_to(bench_dir)
    parts = rel.with_suffix("").parts
    row = {
        "stage": parts[0] if len(parts) > 1 else "other",
        "job": rel.with_suffix("").as_posix(),
        "dataset": None,
        "model": None,
        "seed": None,
    }
    if parts[0] in MODEL_STAGES and len(parts) >= 4 and parts[2] == "batched":
        # one job for every model of the dataset (second_stage.batched): a cost of the dataset, no one row's
        row.update(
            dataset=parts[1], seed=int(parts[3].removeprefix("seed")), job=f"{parts[0]}/{'/'.join(parts[4:])} (batched)"
        )
    elif parts[0] in MODEL_STAGES and len(parts) >= 4:
        seed_part = parts[3]
        row.update(
            dataset=parts[1],
            model=parts[2],
            seed=int(seed_part.removeprefix("seed")),
            job=parts[0] if len(parts) == 4 else f"{parts[0]}/{'/'.join(parts[4:])}",
        )
    elif parts[0] == layout.SECTION3_FOLDER:
        seed_folder = parts[-2].removeprefix(layout.batched_seed_folder("")).removeprefix(layout.seed_folder(""))
        row.update(job=f"{parts[0]}/{parts[-1]}", seed=int(seed_folder))
    last = _last_row(path)
    row.update(
        seconds=float(last["s"]),
        max_rss_mb=float(last.get("max_rss", float("nan"))),
        cpu_seconds=float(last.get("cpu_time", float("nan"))),
        file=str(rel),
    )
    return row


def _last_row(path: Path) -> pd.Series:
    table = pd.read_csv(path, sep="\t")
    if table.empty or "s" not in table:
        raise ValueError(f"{path}: not a Snakemake benchmark file (no 's' column or no row)")
    return table.iloc[-1]  # a job re-run with `benchmark: repeat(...)` has several rows; the last is the latest


def benchmark_seconds(path: str | Path) -> float:
    """The wall seconds one job's benchmark file records (its latest run)."""
    return float(_last_row(Path(path))["s"])


def read_benchmarks(bench_dir: str | Path) -> pd.DataFrame:
    """One row per job's benchmark file under `bench_dir` (COLUMNS); empty if there are none."""
    bench_dir = Path(bench_dir)
    rows = [_one_job(p, bench_dir) for p in sorted(bench_dir.rglob("*.tsv"))]
    jobs = pd.DataFrame(rows, columns=COLUMNS)
    jobs["seed"] = jobs["seed"].astype("Int64")
    return jobs


def per_stage(jobs: pd.DataFrame) -> pd.DataFrame:
    """Jobs, job-hours, mean and longest wall time, peak memory per stage, costliest first."""
    summary = jobs.groupby("stage").agg(
        jobs=("seconds", "size"),
        job_hours=("seconds", "sum"),
        mean_s=("seconds", "mean"),
        max_s=("seconds", "max"),
        max_rss_mb=("max_rss_mb", "max"),
    )
    summary["job_hours"] /= 3600.0
    return summary.sort_values("job_hours", ascending=False)


def per_model(jobs: pd.DataFrame) -> pd.DataFrame:
    """Seconds per Table 3/4 row (dataset, model, seed) and stage, with the row's total."""
    rows = jobs.dropna(subset=["model"])
    if rows.empty:
        return pd.DataFrame()
    table = rows.pivot_table(
        index=["dataset", "model", "seed"], columns="stage", values="seconds", aggfunc="sum", fill_value=0.0
    )
    table["total"] = table.sum(axis=1)
    return table.sort_values("total", ascending=False)


def format_costs(jobs: pd.DataFrame) -> str:
    if jobs.empty:
        return "no benchmark files found"
    lines = [
        f"{len(jobs)} jobs, {jobs['seconds'].sum() / 3600:.2f} job-hours",
        "",
        per_stage(jobs).to_string(float_format=lambda v: f"{v:.2f}"),
    ]
    models = per_model(jobs)
    if not models.empty:
        lines += [
            "",
            "seconds per Table 3/4 row (every job its cells need):",
            models.to_string(float_format=lambda v: f"{v:.1f}"),
        ]
    return "\n".join(lines)
