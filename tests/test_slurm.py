"""The workflow on a real SLURM: its default target through `--profile profiles/slurm-ci`, to the end.

Needs a SLURM the current user can submit to, with the `ci` partition of `.ci/slurm/start.sh`
(a one-node SLURM on localhost; `.ci/run` starts it when CI=true). Without one the test is skipped,
except under CI=true, where it fails: CI must not skip it silently.

The run is config/ci.yaml's MNIST Table 3 of two models in the batched job layout (tests/e2e_run.py,
`run_on_slurm`): twelve jobs go through `sbatch`, the rest are local rules. Until 2026-12-07 this test
ran config/ci.yaml's whole DAG (54 jobs) through SLURM; what it checks is the submission, the retry
and the outputs, not the rules' work, which the suite's local end-to-end runs check. What this test
checks of its run:
- every non-local job of the run went through `sbatch` (Snakemake's submission lines, one SLURM
  log per submission under the run's --slurm-logdir, and slurmctld's job-completion records),
- the run survives a killed job: a watcher `scancel`s the first running `train` job once; SLURM
  reports it CANCELLED, Snakemake re-submits it (`retries` in the profile) and the run completes,
- each job went to the partition of its kind: the config's `cluster.gpu_partition` for the rules
  whose jobs run on the config's device, `cluster.cpu_partition` for the GMM fits (two partitions of
  one node, set in the run's overlay; no per-rule list in the profile),
- the table it was asked for exists, with a number in every cell.

    .venv/bin/python -m pytest -m slurm -s tests/test_slurm.py

Environment (optional): ARELBO_E2E_RUN_TIMEOUT (seconds, default 1500) bounds the run.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from e2e_run import GPU_PARTITION, PARTITION, SLURM_PROFILE, _run, slurm_unavailable

pytestmark = [pytest.mark.slurm, pytest.mark.e2e]


@pytest.fixture(scope="module")
def slurm():
    reason = slurm_unavailable()
    if reason:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true but SLURM is not usable: {reason}", pytrace=False)
        pytest.skip(f"SLURM not available: {reason}")


def jobcomp_records(run_name: str) -> dict[str, dict[str, str]] | None:
    """{SLURM job id: its fields (JobState, Partition, ...)} of this run from slurmctld's
    jobcomp/filetxt log (None: no such log)."""
    config = _run("scontrol", "show", "config").stdout
    kind = re.search(r"^JobCompType\s*=\s*(\S+)", config, re.M)
    loc = re.search(r"^JobCompLoc\s*=\s*(\S+)", config, re.M)
    if not (kind and loc and kind.group(1) == "jobcomp/filetxt" and Path(loc.group(1)).is_file()):
        return None
    records = {}
    for line in Path(loc.group(1)).read_text(errors="replace").splitlines():
        fields = dict(re.findall(r"(\w+)=(\S*)", line))
        if fields.get("Name") == run_name:
            records[fields["JobId"]] = fields
    return records


@pytest.fixture(scope="module")
def slurm_run(slurm, tmp_path_factory, ci_config):
    from e2e_run import run_on_slurm

    return run_on_slurm(tmp_path_factory.mktemp("slurm_run"))


def test_the_workflow_runs_on_slurm_and_survives_a_killed_job(slurm_run):
    run = slurm_run
    assert run.executor == "slurm"
    failure = run.failure()
    assert failure is None, f"snakemake --profile {SLURM_PROFILE}: {failure}"
    output, elapsed, killer, slurm_logs, out = run.log, run.elapsed, run.killer, run.slurm_logs, run.out
    print(f"\nSLURM run: {elapsed:.0f} s wall time")

    # --- the injected failure happened, and the job was retried ---------------------------------
    assert not killer.errors, killer.errors
    assert killer.killed, f"no running train job was seen to kill (run took {elapsed:.0f} s)"
    assert killer.state_after == "CANCELLED", (killer.killed, killer.state_after)
    assert re.search(rf"SLURM-job '{killer.killed}' failed, SLURM status is: 'CANCELLED'", output), (
        f"Snakemake did not report the cancelled job {killer.killed}"
    )

    # --- every non-local job went through sbatch --------------------------------------------------
    run_name = re.search(r"SLURM run ID: (\S+)", output).group(1)
    assert run_name.startswith(killer.prefix + "_")
    submissions: dict[str, list[str]] = {}  # Snakemake job id -> SLURM job ids
    for job, slurm_id in re.findall(r"Job (\d+) has been submitted with SLURM jobid (\d+)", output):
        submissions.setdefault(job, []).append(slurm_id)
    local_jobs = set(re.findall(r"^localrule \w+:\n(?:    .*\n)*?    jobid: (\d+)$", output, re.M))
    remote_jobs = set(re.findall(r"^rule \w+:\n(?:    .*\n)*?    jobid: (\d+)$", output, re.M))
    finished = set(re.findall(r"^Finished jobid: (\d+) \(Rule: \w+\)$", output, re.M))
    assert remote_jobs and local_jobs and finished == remote_jobs | local_jobs, (
        len(remote_jobs),
        len(local_jobs),
        len(finished),
    )
    assert set(submissions) == remote_jobs, "jobs that ran without sbatch: " + str(
        sorted(remote_jobs - set(submissions), key=int)[:10]
    )
    retried = {job: ids for job, ids in submissions.items() if len(ids) > 1}
    assert len(retried) == 1, f"expected exactly the cancelled job to be submitted twice, got {retried}"
    ((job, ids),) = retried.items()
    assert len(ids) == 2 and ids[0] == killer.killed, (killer.killed, retried)
    slurm_ids = [i for ids in submissions.values() for i in ids]
    assert len(slurm_ids) == len(set(slurm_ids)) == len(remote_jobs) + 1

    # the retried job is the killed train job
    train_block = re.search(rf"^rule train:\n(?:    .*\n)*?    jobid: {job}$", output, re.M)
    assert train_block, f"the re-submitted job {job} is not a train job"
    assert "mnist" in killer.comment, killer.comment

    # one SLURM log per submission (profiles/slurm-ci keeps the logs of successful jobs)
    logs = {p.stem for p in slurm_logs.rglob("*.log")}
    assert logs == set(slurm_ids), (sorted(set(slurm_ids) - logs)[:10], sorted(logs - set(slurm_ids))[:10])
    killed_logs = list(slurm_logs.glob(f"rule_train/*/{killer.killed}.log"))
    assert killed_logs, f"no SLURM log of the cancelled job {killer.killed} ({killer.comment})"
    assert (killed_logs[0].parent / f"{ids[1]}.log").is_file(), (
        f"the retry {ids[1]} did not run the cancelled job's wildcards ({killer.comment})"
    )

    # slurmctld's own record (no accounting database: the jobcomp/filetxt log of .ci/slurm)
    records = jobcomp_records(run_name)
    if records is not None:
        assert set(records) == set(slurm_ids), (
            sorted(set(slurm_ids) - set(records))[:10],
            sorted(set(records) - set(slurm_ids))[:10],
        )
        assert records[killer.killed]["JobState"] == "CANCELLED"
        others = {i: r["JobState"] for i, r in records.items() if i != killer.killed and r["JobState"] != "COMPLETED"}
        assert not others, others
    elif os.environ.get("CI", "").lower() == "true":
        pytest.fail("CI's SLURM (.ci/slurm) writes a jobcomp/filetxt log; none was found", pytrace=False)

    # --- each job in its kind's partition (the rule from its SLURM log's folder, rule_<rule>/...) ----
    if records is not None:
        rule_of = {
            log.stem: log.relative_to(slurm_logs).parts[0].removeprefix("rule_") for log in slurm_logs.rglob("*.log")
        }
        partitions: dict[str, set[str]] = {}
        for slurm_id, rule in rule_of.items():
            partitions.setdefault(rule, set()).add(records[slurm_id]["Partition"])
        cpu_rules = {"fit_estimator"}
        assert cpu_rules <= set(partitions), sorted(partitions)
        expected = {rule: {PARTITION if rule in cpu_rules else GPU_PARTITION} for rule in partitions}
        assert partitions == expected, partitions

    # --- the table asked for exists, every cell filled ---------------------------------------------
    import pandas as pd

    results = out / "results"
    assert "\\begin{tabular}" in (results / "table3.tex").read_text()
    table3 = pd.read_csv(results / "tables" / "table3_paper.csv", index_col=0, dtype=str, keep_default_na=False)
    assert list(table3.index) == ["vae", "ae"], table3
    for column, cells in table3.drop(columns="label").items():
        for model, cell in cells.items():
            # "–": the AE has no prior
            undefined = model == "ae" and "_prior" in column
            assert (cell == "–") if undefined else (cell not in ("", "–")), (column, model, cell)
