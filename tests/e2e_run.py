"""The suite's end-to-end runs of the workflow: one per job layout, each run once and read by every
test that needs its outputs (session fixtures `e2e_run` and `batched_run` in conftest.py), and a
small one through SLURM (tests/test_slurm.py).

`run_e2e`: the paper configuration with only sizes changed (`paper_sizes_overlay`), its default
target (Tables 1, 3, 4, 5, Figures 1-3, the claims, the measured costs, the report's plots) in the
paper's per-cell job layout: both datasets (CelebA as the generated stand-in, read through
data.celeba.root like a real download), all four estimators including GMM-100, the paper's batch
sizes, hyper-parameters and second-stage network, `fid.reference_count: null`. Read by
tests/test_paper_config.py and tests/test_workflow.py. Always local, one thread a job and two jobs
at once, as `make quick` runs.

`run_batched`: config/ci.yaml's batched job layout (one sample-and-score job per model, one
second-stage job per dataset, one training job per Section 3 group; what `make quick` and the GPU
check use) with the example plugin's model and estimator, on MNIST, to Tables 1, 3, 4 and 5, locally.
Read by tests/test_plugins.py.

`run_on_slurm`: a small DAG of config/ci.yaml (MNIST Table 3 of two models) through `--profile
profiles/slurm-ci`, where a watcher `scancel`s the first running training once. Read by
tests/test_slurm.py only, and run only where a SLURM with the `ci` partition of `.ci/slurm/start.sh`
answers (CI always: `.ci/run` starts one). It is small because through SLURM each job pays two more
Snakemake start-ups and waits for the executor's status checks: measured on the 2-core development
machine on 2026-12-07, the batched run took 333 s through SLURM against 131 s locally, the per-cell
run 557 s against 287 s.

Until 2026-12-07 the suite ran config/ci.yaml's whole DAG through SLURM, the paper configuration
locally and the plugin run: three runs, ~900 s of CI's ~1,800 s.

Environment (optional): ARELBO_E2E_RUN_TIMEOUT (seconds, default 1500) bounds each run.
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

import yaml

REPO = Path(__file__).resolve().parents[1]
SLURM_PROFILE = "profiles/slurm-ci"
PARTITION = "ci"  # profiles/slurm-ci: default-resources slurm_partition=ci
# .ci/slurm/start.sh's second partition: run_on_slurm sends the GPU rules there (config `cluster`)
GPU_PARTITION = f"{PARTITION}-gpu"
TIMEOUT = int(os.environ.get("ARELBO_E2E_RUN_TIMEOUT", "1500"))
EXAMPLE_PLUGIN = REPO / "examples" / "arelbo-example-plugin"
NAME = "paper-sizes"  # the run's config name: its logs are under <logdir>/paper-sizes
MODELS = ["ae", "iso_i_arelbo"]  # a deterministic model (no prior: "–") and the paper's AR-ELBO
N_SAMPLES = 16  # generated images per FID


def paper_sizes_overlay(path: Path, celeba_root: str) -> Path:
    """config/config.yaml with only sizes changed, and labelled as reduced
    (tests/test_paper_config.py checks that it changes nothing else)."""
    overlay = {
        # labels: a sized-down run must never present itself as comparable with the paper
        "name": NAME,
        "reduced": True,
        "description": "config/config.yaml with only sizes changed (tests/e2e_run.py)",
        "models": MODELS,
        "data": {
            "mnist": {"limit": {"train": 384, "val": 128, "test": 64}},
            # >= 100 training latents for GMM-100; the stand-in's whole 20-image test split
            "celeba": {"root": celeba_root, "limit": {"train": 112, "val": 16, "test": None}},
        },
        "fid": {"n_samples": N_SAMPLES},
        "train": {"mnist": {"epochs": 1}, "celeba": {"epochs": 1}},
        "second_stage": {"epochs": 2},
        "section3": {
            "train": {"epochs": 1},
            "train_limit": 256,
            "table1": {"log10_sigma_x2": [0.0, -1.0]},
            "table5": {"log10_sigma_z2": [1.0, -1.0]},
            "figures": {
                "figure1_log10_sigma_x2": [0.0, -1.0],
                "figure2_log10_sigma_x2": [0.0, -1.0],
                "figure3_log10_sigma_z2": [1.0, -1.0],
                "figure1_images": 2,
                "figure1_perturbations": 3,
                "tsne_points": 100,
                "tsne_prior_points": 30,
            },
        },
    }
    path.write_text(yaml.safe_dump(overlay, sort_keys=False))
    return path


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
        states = _run("sinfo", "-h", "-p", f"{PARTITION},{GPU_PARTITION}", "-o", "%P %t")
    except subprocess.TimeoutExpired:
        return "`sinfo` timed out (slurmctld not answering)"
    if states.returncode != 0:
        return f"`sinfo` failed: {states.stderr.strip() or states.stdout.strip()} (start it: .ci/slurm/start.sh)"
    usable = {
        partition.rstrip("*")
        for partition, state in (line.split() for line in states.stdout.splitlines() if line.strip())
        if state.rstrip("*~#") in ("idle", "mix", "mixed", "alloc", "allocated")
    }
    missing = [p for p in (PARTITION, GPU_PARTITION) if p not in usable]
    if missing:
        return (
            f"no usable node in SLURM partition(s) {missing} (sinfo: {states.stdout.split() or 'none'}; "
            "start them: .ci/slurm/start.sh)"
        )
    return None


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
class E2eRun:
    """What the run left: outputs under `out` (results/, logs/), Snakemake's whole output in `log`;
    `configfiles` its configuration (pass them as --configfile / --config to read the run again)."""

    out: Path
    configfiles: list[Path]
    executor: str  # "slurm" or "local"
    returncode: int | None  # None: it did not finish within TIMEOUT (and was stopped)
    log: str
    elapsed: float
    killer: TrainKiller | None = None
    slurm_logs: Path | None = None

    def failure(self) -> str | None:
        """Why the run cannot be read (None: it finished with status 0)."""
        if self.returncode is None:
            return f"the {self.executor} end-to-end run did not finish within {TIMEOUT} s:\n{self.log[-6000:]}"
        if self.returncode != 0:
            return (
                f"the {self.executor} end-to-end run failed ({self.returncode}) after "
                f"{self.elapsed:.0f} s:\n{self.log[-6000:]}"
            )
        return None


def _snakemake_until_done(cmd: list[str], log_file: Path, env: dict | None = None) -> int | None:
    with open(log_file, "w") as log:
        proc = subprocess.Popen(
            cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, text=True, start_new_session=True, env=env
        )
        try:
            return proc.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            # SIGINT: Snakemake cancels its own (SLURM or local) jobs; then make sure.
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
            return None


def plugin_env() -> dict:
    """The environment with the example plugin importable (as `pip install -e` of it would make it)."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(EXAMPLE_PLUGIN), os.environ.get("PYTHONPATH", "")])}


def run_e2e(out: Path, celeba_root: str) -> E2eRun:
    """The default target of the paper-sizes configuration into `out`, locally."""
    overlay = paper_sizes_overlay(out / f"{NAME}.yaml", celeba_root)
    return _run_workflow(out, [overlay], [], slurm=False)


def run_batched(out: Path) -> E2eRun:
    """config/ci.yaml's batched layout with the example plugin, on MNIST, to Tables 1, 3, 4 and 5,
    locally."""
    mnist_only = out / "mnist-only.yaml"
    mnist_only.write_text("datasets: [mnist]\nestimators: [prior, 2ndvae, gmm10, gmmdiag]\n")
    configfiles = [REPO / "config" / "ci.yaml", EXAMPLE_PLUGIN / "example.yaml", mnist_only]
    targets = [str(out / "results" / f"table{n}.tex") for n in (1, 3, 4, 5)]
    return _run_workflow(out, configfiles, targets, slurm=False, env=plugin_env())


def run_on_slurm(out: Path) -> E2eRun:
    """config/ci.yaml's MNIST Table 3 for two models (a VAE with a prior, an AE without) scored on the
    prior, the second stage and GMM-10, through SLURM: 12 jobs submitted with `sbatch` (trainings,
    encodings, MSEs, the dataset's batched second stage, one sample-and-score job per model, the FID
    reference on GPU_PARTITION; the two GMM fits on PARTITION) and the local ones; a watcher cancels
    the first running training once."""
    mnist_only = out / "mnist-table3.yaml"
    mnist_only.write_text(
        "datasets: [mnist]\nmodels: [vae, ae]\nestimators: [prior, 2ndvae, gmm10]\n"
        f"cluster: {{gpu_partition: {GPU_PARTITION}, cpu_partition: {PARTITION}}}\n"
    )
    configfiles = [REPO / "config" / "ci.yaml", mnist_only]
    return _run_workflow(out, configfiles, [str(out / "results" / "table3.tex")], slurm=True)


def _run_workflow(
    out: Path, configfiles: list[Path], targets: list[str], *, slurm: bool, env: dict | None = None
) -> E2eRun:
    """Snakemake on `configfiles` into `out` (its default target where `targets` is empty): locally,
    or with `slurm` through profiles/slurm-ci with a watcher that cancels the first running training
    once."""
    config = [
        "--configfile",
        *map(str, configfiles),
        "--config",
        f"outdir={out / 'results'}",
        f"logdir={out / 'logs'}",
    ]
    targets = ["--", *targets] if targets else []
    log_file = out / "snakemake.log"
    started = time.monotonic()
    if not slurm:
        returncode = _snakemake_until_done(
            [sys.executable, "-m", "snakemake", "--cores", "2", "--max-threads", "1", *config, *targets], log_file, env
        )
        return E2eRun(out, configfiles, "local", returncode, log_file.read_text(), time.monotonic() - started)

    slurm_logs = out / "slurm_logs"
    prefix = "arelbotest_" + uuid.uuid4().hex[:8]
    killer = TrainKiller(prefix)
    killer.start()
    try:
        returncode = _snakemake_until_done(
            [
                sys.executable,
                "-m",
                "snakemake",
                "--profile",
                SLURM_PROFILE,
                *config,
                "--slurm-logdir",
                str(slurm_logs),
                "--slurm-jobname-prefix",
                prefix,
                *targets,
            ],
            log_file,
            env,
        )
    finally:
        killer.stop.set()
        killer.join(timeout=60)
    log = log_file.read_text()
    if returncode is None:
        name = re.search(r"SLURM run ID: (\S+)", log)
        if name:
            _run("scancel", "--name", name.group(1))
    return E2eRun(
        out, configfiles, "slurm", returncode, log, time.monotonic() - started, killer=killer, slurm_logs=slurm_logs
    )
