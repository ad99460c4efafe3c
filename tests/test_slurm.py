"""The workflow on a real SLURM: config/ci.yaml through `--profile profiles/slurm-ci`, to the end.

Needs a SLURM the current user can submit to, with the `ci` partition of `.ci/slurm/start.sh`
(a one-node SLURM on localhost; `.ci/run` starts it when CI=true). Without one the test is skipped,
except under CI=true, where it fails: CI must not skip it silently.

What it checks:
- every non-local job of the run went through `sbatch` (Snakemake's submission lines, one SLURM
  log per submission under the run's --slurm-logdir, and slurmctld's job-completion records),
- the run survives a killed job: a watcher `scancel`s the first running `train` job once; SLURM
  reports it CANCELLED, Snakemake re-submits it (`retries` in the profile) and the run completes,
- every target of the default rule `all` (Table 3, Table 4, and whatever it lists later) exists.

    .venv/bin/python -m pytest -m slurm -s tests/test_slurm.py

Environment (optional): ARELBO_SLURM_TEST_TIMEOUT (seconds, default 14400) bounds the run;
ARELBO_SLURM_TEST_MODELS (comma-separated model ids) restricts the models, for a quicker look while
developing; CI runs the whole config.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
PROFILE = "profiles/slurm-ci"
PARTITION = "ci"  # profiles/slurm-ci: default-resources slurm_partition=ci
TIMEOUT = int(os.environ.get("ARELBO_SLURM_TEST_TIMEOUT", "14400"))

pytestmark = pytest.mark.slurm


def _run(*cmd: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def slurm_unavailable() -> str | None:
    """Why this machine cannot run the test (None: it can)."""
    for tool in ("sbatch", "squeue", "scancel", "sinfo", "scontrol"):
        if shutil.which(tool) is None:
            return f"`{tool}` not on PATH (no SLURM client; CI starts one with .ci/slurm/start.sh)"
    try:
        import snakemake_executor_plugin_slurm  # noqa: F401
    except ImportError:
        return "snakemake-executor-plugin-slurm is not installed (pip install '.[slurm]')"
    try:
        states = _run("sinfo", "-h", "-p", PARTITION, "-o", "%t")
    except subprocess.TimeoutExpired:
        return "`sinfo` timed out (slurmctld not answering)"
    if states.returncode != 0:
        return f"`sinfo` failed: {states.stderr.strip() or states.stdout.strip()} (start it: .ci/slurm/start.sh)"
    usable = [s for s in states.stdout.split() if s.rstrip("*~#") in ("idle", "mix", "mixed", "alloc", "allocated")]
    if not usable:
        return (f"no usable node in SLURM partition {PARTITION!r} (sinfo states: {states.stdout.split() or 'none'}; "
                "start one: .ci/slurm/start.sh)")
    return None


@pytest.fixture(scope="module")
def slurm():
    reason = slurm_unavailable()
    if reason:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true but SLURM is not usable: {reason}", pytrace=False)
        pytest.skip(f"SLURM not available: {reason}")


class TrainKiller(threading.Thread):
    """Polls squeue for this run's jobs and scancels the first running `train` job, once."""

    def __init__(self, prefix: str):
        super().__init__(daemon=True)
        self.prefix = prefix
        self.stop = threading.Event()
        self.killed: str | None = None  # SLURM job id
        self.comment: str | None = None  # the plugin's job comment: rule_train_wildcards_<...>
        self.state_after: str | None = None  # what SLURM says about it after the scancel
        self.errors: list[str] = []

    def run(self):
        while not self.stop.is_set() and self.killed is None:
            out = _run("squeue", "-h", "-t", "RUNNING", "-o", "%i|%j|%k")
            for line in out.stdout.splitlines():
                job_id, name, comment = (line.split("|", 2) + ["", ""])[:3]
                if name.startswith(self.prefix + "_") and comment.startswith("rule_train"):
                    result = _run("scancel", job_id)
                    if result.returncode != 0:
                        self.errors.append(f"scancel {job_id}: {result.stderr.strip()}")
                        continue
                    self.killed, self.comment = job_id, comment
                    break
            else:
                self.stop.wait(0.5)
        if self.killed:
            # Read the state back while slurmctld still holds the job (MinJobAge).
            for _ in range(60):
                state = _run("squeue", "-h", "--states=all", "-j", self.killed, "-o", "%T").stdout.strip()
                if state and state not in ("RUNNING", "COMPLETING", "PENDING"):
                    self.state_after = state
                    break
                time.sleep(0.5)


def jobcomp_records(run_name: str) -> dict[str, str] | None:
    """{SLURM job id: JobState} of this run from slurmctld's jobcomp/filetxt log (None: no such log)."""
    config = _run("scontrol", "show", "config").stdout
    kind = re.search(r"^JobCompType\s*=\s*(\S+)", config, re.M)
    loc = re.search(r"^JobCompLoc\s*=\s*(\S+)", config, re.M)
    if not (kind and loc and kind.group(1) == "jobcomp/filetxt" and Path(loc.group(1)).is_file()):
        return None
    records = {}
    for line in Path(loc.group(1)).read_text(errors="replace").splitlines():
        fields = dict(re.findall(r"(\w+)=(\S*)", line))
        if fields.get("Name") == run_name:
            records[fields["JobId"]] = fields.get("JobState", "")
    return records


def test_ci_config_runs_on_slurm_and_survives_a_killed_job(slurm, ci_config, tmp_path):
    out = tmp_path / "out"
    overlay = {"outdir": str(out / "results"), "logdir": str(out / "logs")}
    if os.environ.get("ARELBO_SLURM_TEST_MODELS"):
        overlay["models"] = os.environ["ARELBO_SLURM_TEST_MODELS"].split(",")
    overlay_file = tmp_path / "overlay.yaml"
    overlay_file.write_text(yaml.safe_dump(overlay))
    slurm_logs = tmp_path / "slurm_logs"
    prefix = "arelbotest_" + uuid.uuid4().hex[:8]
    log_file = tmp_path / "snakemake.log"

    killer = TrainKiller(prefix)
    killer.start()
    started = time.monotonic()
    with open(log_file, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "snakemake", "--profile", PROFILE, "--configfile", "config/ci.yaml",
             str(overlay_file), "--slurm-logdir", str(slurm_logs), "--slurm-jobname-prefix", prefix],
            cwd=REPO, stdout=log, stderr=subprocess.STDOUT, text=True, start_new_session=True)
        try:
            returncode = proc.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            # SIGINT: Snakemake cancels its SLURM jobs itself; then make sure.
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
            name = re.search(r"SLURM run ID: (\S+)", log_file.read_text())
            if name:
                _run("scancel", "--name", name.group(1))
            returncode = None
        finally:
            killer.stop.set()
            killer.join(timeout=60)
    elapsed = time.monotonic() - started
    output = log_file.read_text()
    tail = output[-6000:]
    assert returncode is not None, f"the SLURM run did not finish within {TIMEOUT} s:\n{tail}"
    assert returncode == 0, f"snakemake --profile {PROFILE} failed ({returncode}) after {elapsed:.0f} s:\n{tail}"
    print(f"\nSLURM run of config/ci.yaml: {elapsed:.0f} s wall time")

    # --- the injected failure happened, and the job was retried ---------------------------------
    assert not killer.errors, killer.errors
    assert killer.killed, f"no running train job was seen to kill (run took {elapsed:.0f} s)"
    assert killer.state_after == "CANCELLED", (killer.killed, killer.state_after)
    assert re.search(rf"SLURM-job '{killer.killed}' failed, SLURM status is: 'CANCELLED'", output), \
        f"Snakemake did not report the cancelled job {killer.killed}"

    # --- every non-local job went through sbatch --------------------------------------------------
    run_name = re.search(r"SLURM run ID: (\S+)", output).group(1)
    assert run_name.startswith(prefix + "_")
    submissions: dict[str, list[str]] = {}  # Snakemake job id -> SLURM job ids
    for job, slurm_id in re.findall(r"Job (\d+) has been submitted with SLURM jobid (\d+)", output):
        submissions.setdefault(job, []).append(slurm_id)
    local_jobs = set(re.findall(r"^localrule \w+:\n(?:    .*\n)*?    jobid: (\d+)$", output, re.M))
    remote_jobs = set(re.findall(r"^rule \w+:\n(?:    .*\n)*?    jobid: (\d+)$", output, re.M))
    finished = set(re.findall(r"^Finished jobid: (\d+) \(Rule: \w+\)$", output, re.M))
    assert remote_jobs and local_jobs and finished == remote_jobs | local_jobs, \
        (len(remote_jobs), len(local_jobs), len(finished))
    assert set(submissions) == remote_jobs, "jobs that ran without sbatch: " + \
        str(sorted(remote_jobs - set(submissions), key=int)[:10])
    retried = {job: ids for job, ids in submissions.items() if len(ids) > 1}
    assert len(retried) == 1, f"expected exactly the cancelled job to be submitted twice, got {retried}"
    ((job, ids),) = retried.items()
    assert len(ids) == 2 and ids[0] == killer.killed, (killer.killed, retried)
    slurm_ids = [i for ids in submissions.values() for i in ids]
    assert len(slurm_ids) == len(set(slurm_ids)) == len(remote_jobs) + 1

    # the retried job is the killed train job
    train_block = re.search(rf"^rule train:\n(?:    .*\n)*?    jobid: {job}$", output, re.M)
    assert train_block, f"the re-submitted job {job} is not a train job"

    # one SLURM log per submission (profiles/slurm-ci keeps the logs of successful jobs)
    logs = {p.stem for p in slurm_logs.rglob("*.log")}
    assert logs == set(slurm_ids), (sorted(set(slurm_ids) - logs)[:10], sorted(logs - set(slurm_ids))[:10])
    killed_logs = list(slurm_logs.glob(f"rule_train/*/{killer.killed}.log"))
    assert killed_logs, f"no SLURM log of the cancelled job {killer.killed} ({killer.comment})"
    assert (killed_logs[0].parent / f"{ids[1]}.log").is_file(), \
        f"the retry {ids[1]} did not run the cancelled job's wildcards ({killer.comment})"

    # slurmctld's own record (no accounting database: the jobcomp/filetxt log of .ci/slurm)
    records = jobcomp_records(run_name)
    if records is not None:
        assert set(records) == set(slurm_ids), (sorted(set(slurm_ids) - set(records))[:10],
                                                sorted(set(records) - set(slurm_ids))[:10])
        assert records[killer.killed] == "CANCELLED"
        others = {i: s for i, s in records.items() if i != killer.killed and s != "COMPLETED"}
        assert not others, others

    # --- the targets of `all` exist ---------------------------------------------------------------
    all_block = re.search(r"^localrule all:\n    input: (.*)$", output, re.M)
    assert all_block, "the run did not execute the default rule `all`"
    targets = [Path(t) for t in all_block.group(1).split(", ")]
    results = out / "results"
    assert {results / "table3.tex", results / "table4.tex"} <= set(targets), targets
    for target in targets:
        assert target.is_file() and target.stat().st_size > 0, target
    assert "\\begin{tabular}" in (results / "table3.tex").read_text()
