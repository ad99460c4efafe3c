"""A CPU kind's per-image costs (arelbo/reference/costs.yaml) fitted to a finished run's benchmark files.

    python benchmarks/calibrate_cpu_costs.py --configfile config/quick.yaml --logs LOGS [--kind cpu-2core]

Every job of the config's DAG that left a benchmark file under LOGS (the run's own log folder, which
holds `benchmarks/`) is one equation: its wall seconds = the sum over the row's cost keys of the key's
per-unit cost × the units the job processes (images, epochs × images, components × points × dims, one
start-up, ...). The units are the planner's own (arelbo.planning.plan.job_cost, evaluated with one
key set to 1 and every other to 0), so the fitted row plans the run it came from: a non-negative least
squares fit over all jobs. The row it prints is in the threads the run's jobs had (`--threads`, 1 for
`make quick`). Keys no job of the run exercises keep the kind's current value.
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import numpy as np
from scipy.optimize import nnls

from arelbo.core.config import load_config
from arelbo.planning.plan import TARGET_RULE, device_costs, job_cost, planned_jobs
from arelbo.reporting.costs import benchmark_seconds

# The per-unit keys of a CPU row a fit can set (a dict value: one per dataset).
KEYS = (
    "job_startup_s",
    "light_job_s",
    ("train_image_s", "mnist"),
    "section3_image_s",
    "criteria_image_s",
    ("encode_image_s", "mnist"),
    ("decode_image_s", "mnist"),
    "inception_image_s",
    "fid_fixed_s",
    "second_stage_image_s",
    "gmm_point_component_dim_s",
)


def _set(row: dict, key, value: float) -> None:
    if isinstance(key, tuple):
        row[key[0]] = {**row[key[0]], key[1]: value}
    else:
        row[key] = value


def _unit_row(base: dict, key) -> dict:
    row = copy.deepcopy(base)
    for k in KEYS:
        _set(row, k, 0.0)
    for k in ("frechet_full_rank_s", "bootstrap_resample_s", "delta_se_s"):
        row[k] = 0.0  # the Fréchet distance's share is counted in fid_fixed_s below N = 2049
    if key is not None:
        _set(row, key, 1.0)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configfile", nargs="+", required=True)
    parser.add_argument("--logs", required=True, help="the run's log folder (holds benchmarks/)")
    parser.add_argument("--kind", default="cpu-2core")
    args = parser.parse_args()
    cfg = load_config(*args.configfile, check_folders=False)
    base = device_costs(args.kind)
    units = {key: _unit_row(base, key) for key in KEYS}
    rows, seconds, rules = [], [], []
    for job in planned_jobs(args.configfile):
        if job.rule == TARGET_RULE or not job.benchmark or not (Path(args.logs) / job.benchmark).is_file():
            continue
        rows.append([job_cost(cfg, units[key], job.rule, job.wildcards, gpu=job.gpu).seconds for key in KEYS])
        seconds.append(benchmark_seconds(Path(args.logs) / job.benchmark))
        rules.append(job.rule)
    a, b = np.array(rows), np.array(seconds)
    used = a.any(axis=0)
    fitted, _ = nnls(a[:, used], b)
    values = dict(zip([k for k, u in zip(KEYS, used) if u], fitted))
    predicted = a[:, used] @ fitted
    print(
        f"{len(b)} jobs with a benchmark file; ran {b.sum() / 3600:.3f} job-hours, "
        f"the fit plans {predicted.sum() / 3600:.3f}"
    )
    for rule in sorted(set(rules)):
        mask = np.array(rules) == rule
        print(f"  {rule:40s} {mask.sum():3d} jobs  ran {b[mask].sum():8.1f} s  fitted {predicted[mask].sum():8.1f} s")
    print("fitted row (keys no job exercised keep their value):")
    for key in KEYS:
        name = ".".join(key) if isinstance(key, tuple) else key
        print(f"  {name}: {values[key]:.3g}" if key in values else f"  {name}: (not exercised)")


if __name__ == "__main__":
    main()
