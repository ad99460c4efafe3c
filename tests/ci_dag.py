"""The suite's one run of config/ci.yaml's default target (Tables 1, 3, 4, 5, Figures 1-3, report
plots), shared by tests/test_workflow.py (every cell, costs, report, plan) and tests/test_slurm.py
(submission, a killed job, retries), which used to run the same DAG once each (467 s of CI's time
for the second run, 2026-12-02).

Where a SLURM with the `ci` partition of `.ci/slurm/start.sh` answers (CI always: `.ci/run` starts
one), the run goes through `--profile profiles/slurm-ci` and a watcher `scancel`s its first running
`train` job once; elsewhere it runs locally, one thread a job and two jobs at once, as `make quick`
does. Either way the end-to-end tests read the same outputs: they check what the DAG writes, not how
it was scheduled; the local executor is run end to end by the paper-config and plugin tests.

Environment (optional): ARELBO_CI_RUN_TIMEOUT (seconds, default 1500) bounds the run; set
ARELBO_CI_RUN=local to run it locally even where a SLURM answers.
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
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SLURM_PROFILE = "profiles/slurm-ci"
PARTITION = "ci"  # profiles/slurm-ci: default-resources slurm_partition=ci
TIMEOUT = int(os.environ.get("ARELBO_CI_RUN_TIMEOUT", "1500"))


def _run(*cmd: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def slurm_unavailable() -> str | None:
    """Why this machine cannot run the workflow through SLURM (None: it can)."""
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
        return (
            f"no usable node in SLURM partition {PARTITION!r} (sinfo states: {states.stdout.split() or 'none'}; "
            "start one: .ci/slurm/start.sh)"
        )
    return None


def shared_inputs() -> list[Path]:
    """The files under resources/ that the ci DAG builds and other tests read too: the raw MNIST files,
    Inception weights, prepared datasets and FID reference statistics of config/ci.yaml."""
    from arelbo.core import layout
    from arelbo.core.config import load_config

    cfg = load_config(REPO / "config" / "ci.yaml", check_folders=False)
    tags = [layout.dataset_tag("mnist"), layout.dataset_tag("celeba", cfg.data.celeba.root)]
    raw = layout.mnist_raw_dir(cfg.resources)
    return [
        *(raw / name for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte")),
        *(raw / name for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")),
        layout.inception_weights(cfg.resources),
        *(layout.dataset_cache_meta(cfg.resources, tag) for tag in tags),
        *(layout.fid_reference(cfg.resources, tag, "test", cfg.fid.reference_count) for tag in tags),
    ]


def build_shared_inputs(out: Path) -> None:
    """Brings `shared_inputs()` up to date with config/ci.yaml's own rules, in the foreground (a few
    seconds when they are: Snakemake finds nothing to do). Run from the repository root, as the suite is."""
    config = ["--configfile", "config/ci.yaml", "--config", f"outdir={out / 'results'}", f"logdir={out / 'logs'}"]
    targets = [str(path) for path in shared_inputs()]
    result = _run(sys.executable, "-m", "snakemake", *targets, "--cores", "2", *config, timeout=TIMEOUT)
    if result.returncode != 0:
        raise RuntimeError(
            f"building the ci DAG's shared inputs failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )


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


@dataclass
class CiRun:
    """What the run left: outputs under `out` (results/, logs/), Snakemake's whole output in `log`."""

    out: Path
    executor: str  # "slurm" or "local"
    returncode: int | None  # None: it did not finish within TIMEOUT (and was stopped)
    log: str
    elapsed: float
    why_not_slurm: str | None = None  # why a local run (None for a SLURM one)
    killer: TrainKiller | None = None
    slurm_logs: Path | None = None

    def failure(self) -> str | None:
        """Why the run cannot be read (None: it finished with status 0)."""
        if self.returncode is None:
            return f"the {self.executor} run of config/ci.yaml did not finish within {TIMEOUT} s:\n{self.log[-6000:]}"
        if self.returncode != 0:
            return (
                f"the {self.executor} run of config/ci.yaml failed ({self.returncode}) after "
                f"{self.elapsed:.0f} s:\n{self.log[-6000:]}"
            )
        return None


class _Snakemake:
    """A Snakemake process writing to `log_file`, stopped (SIGINT, then SIGKILL) past TIMEOUT."""

    def __init__(self, cmd: list[str], log_file: Path):
        self.log_file = log_file
        self._log = open(log_file, "w")
        self.started = time.monotonic()
        self.finished: float | None = None
        self.proc = subprocess.Popen(
            cmd, cwd=REPO, stdout=self._log, stderr=subprocess.STDOUT, text=True, start_new_session=True
        )
        self._done = threading.Event()
        threading.Thread(target=self._reap, daemon=True).start()

    def _reap(self):
        self.proc.wait()
        self.finished = time.monotonic()
        self._done.set()

    def wait(self) -> int | None:
        """Its exit status; None: it did not finish within TIMEOUT of its start (and was stopped)."""
        try:
            if self._done.wait(timeout=max(0.0, TIMEOUT - (time.monotonic() - self.started))):
                return self.proc.returncode
            # SIGINT: Snakemake cancels its own (SLURM or local) jobs; then make sure.
            os.killpg(self.proc.pid, signal.SIGINT)
            if not self._done.wait(timeout=120):
                os.killpg(self.proc.pid, signal.SIGKILL)
            return None
        finally:
            self._log.close()

    @property
    def elapsed(self) -> float:
        return (self.finished or time.monotonic()) - self.started


class PendingCiRun:
    """config/ci.yaml's default target into `out`, started now (through SLURM where one answers, else
    locally) and running in the background until `result()` waits for it."""

    def __init__(self, out: Path):
        self.out = out
        config = ["--configfile", "config/ci.yaml", "--config", f"outdir={out / 'results'}", f"logdir={out / 'logs'}"]
        log_file = out / "snakemake.log"
        self.why_not_slurm = (
            "ARELBO_CI_RUN=local" if os.environ.get("ARELBO_CI_RUN") == "local" else slurm_unavailable()
        )
        self.killer: TrainKiller | None = None
        self.slurm_logs: Path | None = None
        self._result: CiRun | None = None
        if self.why_not_slurm:
            self.executor = "local"
            self.run = _Snakemake(
                [sys.executable, "-m", "snakemake", "--cores", "2", "--max-threads", "1", *config], log_file
            )
            return
        self.executor = "slurm"
        self.slurm_logs = out / "slurm_logs"
        prefix = "arelbotest_" + uuid.uuid4().hex[:8]
        self.killer = TrainKiller(prefix)
        self.killer.start()
        self.run = _Snakemake(
            [
                sys.executable,
                "-m",
                "snakemake",
                "--profile",
                SLURM_PROFILE,
                *config,
                "--slurm-logdir",
                str(self.slurm_logs),
                "--slurm-jobname-prefix",
                prefix,
            ],
            log_file,
        )

    def result(self) -> CiRun:
        """Waits for the run (once) and says what it left."""
        if self._result is None:
            try:
                returncode = self.run.wait()
            finally:
                if self.killer:
                    self.killer.stop.set()
                    self.killer.join(timeout=60)
            log = self.run.log_file.read_text()
            if returncode is None and self.executor == "slurm":
                name = re.search(r"SLURM run ID: (\S+)", log)
                if name:
                    _run("scancel", "--name", name.group(1))
            self._result = CiRun(
                self.out,
                self.executor,
                returncode,
                log,
                self.run.elapsed,
                why_not_slurm=self.why_not_slurm,
                killer=self.killer,
                slurm_logs=self.slurm_logs,
            )
        return self._result
