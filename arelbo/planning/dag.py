"""The workflow's jobs and rules for a config, read from Snakemake's Python API (no text parsing).

`python -m arelbo.planning.dag [--config-entry KEY=VALUE ...] [CONFIG_FILE ...]` builds the DAG of the
Snakefile for the config files (merged in order over config/config.yaml, as `snakemake --configfile A B`
merges them) and prints it as JSON on stdout: every job of the whole DAG as on a fresh machine (every
job forced, as `--forceall` does; `outdir` and `logdir` in a temporary folder) with its rule,
wildcards, benchmark file relative to the run's log folder (`benchmarks/...`) and resources that
matter to a plan, in the order Snakemake could run them; the merged config the workflow parsed;
and every rule the workflow defines for that config, with the same resources. `--rules-only` parses
the workflow and prints the rules alone.

The callers here (`workflow_dag`, `workflow_rules`) run it in a subprocess: Snakemake's global state
(logging, working directory, the parsed workflow) stays out of the caller's process.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import NamedTuple

import yaml

from arelbo.core.layout import REPO_ROOT

# The resources a plan reads: `gpu` (the job runs on the config's device, workflow/rules/common.smk)
# and `gpu_slots` (its share of one card). A rule's resource that is a function of the job's
# wildcards is null in the rule table; a job's is always its value.
PLAN_RESOURCES = ("gpu", "gpu_slots")
# The switches that define rules of their own: each is one rule per item when true, one per job else.
BATCHED_SWITCHES = ("section3", "fid", "second_stage")


class PlannedJob(NamedTuple):
    rule: str
    wildcards: dict[str, str]
    benchmark: str | None  # relative to the log folder (`<config name>/benchmarks/...`); None: none
    resources: dict[str, int]  # PLAN_RESOURCES the rule gives the job
    threads: int = 1  # the threads the rule asks for (Snakemake lowers them to --cores / --max-threads)

    @property
    def gpu(self) -> bool:
        return bool(self.resources.get("gpu"))


class WorkflowDag(NamedTuple):
    jobs: list[PlannedJob]
    rules: dict[str, dict[str, int | None]]  # every rule the workflow defines for the config: PLAN_RESOURCES
    config: str  # the merged config the workflow parsed (as `arelbo config` prints it; outdir/logdir the DAG's)


def _command(config_files: Sequence[str | Path], extra: Sequence[str], rules_only: bool = False) -> list[str]:
    cmd = [sys.executable, "-m", "arelbo.planning.dag", *(["--rules-only"] if rules_only else [])]
    for entry in extra:
        cmd.append(f"--config-entry={entry}")
    return [*cmd, "--", *(str(Path(f).resolve()) for f in config_files)]


def _result(out: subprocess.CompletedProcess | tuple[int, str, str]) -> dict:
    returncode, stdout, stderr = out if isinstance(out, tuple) else (out.returncode, out.stdout, out.stderr)
    if returncode != 0:
        raise RuntimeError(f"Snakemake could not build the workflow's DAG:\n{stderr[-3000:]}")
    return json.loads(stdout)


def workflow_dag(
    config_files: Sequence[str | Path], extra: Sequence[str] = (), repo: Path | None = None
) -> WorkflowDag:
    """The whole DAG for `config_files` (merged in order) and `extra` config entries (`KEY=VALUE`, as
    after `snakemake --config`; `outdir`/`logdir` are the DAG's own), built by Snakemake in a
    subprocess. Raises RuntimeError with the end of Snakemake's message when the workflow fails."""
    out = subprocess.run(_command(config_files, extra), cwd=repo or REPO_ROOT, capture_output=True, text=True)
    data = _result(out)
    return WorkflowDag([PlannedJob(**job) for job in data["jobs"]], data["rules"], data["config"])


def workflow_rules(
    variants: Sequence[Sequence[str | Path]] = ((),), repo: Path | None = None
) -> dict[str, dict[str, int | None]]:
    """Every rule the workflow defines for any of the `variants` (each a list of config files, merged
    in order), with its PLAN_RESOURCES: the Snakefile parsed once per variant, in parallel subprocesses."""
    procs = [
        subprocess.Popen(
            _command(files, (), rules_only=True),
            cwd=repo or REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for files in variants
    ]
    rules: dict[str, dict[str, int | None]] = {}
    for proc in procs:
        stdout, stderr = proc.communicate()
        rules.update(_result((proc.returncode, stdout, stderr))["rules"])
    return rules


def batched_overlay(folder: Path, batched: bool) -> Path:
    """A config overlay setting every switch of BATCHED_SWITCHES to `batched`, written into `folder`."""
    path = Path(folder) / f"batched-{str(batched).lower()}.yaml"
    path.write_text(yaml.safe_dump({switch: {"batched": batched} for switch in BATCHED_SWITCHES}))
    return path


@cache
def every_rule() -> dict[str, dict[str, int | None]]:
    """Every rule the workflow can define, with its PLAN_RESOURCES: the rules of the paper config
    (config/config.yaml: both datasets, every model) with the batched switches all off and all on."""
    with tempfile.TemporaryDirectory() as tmp:
        return workflow_rules([[batched_overlay(Path(tmp), b)] for b in (False, True)])


# ---------------------------------------------------------------------------- in the subprocess


def _resources(resources) -> dict[str, int | None]:
    found = {}
    for name in PLAN_RESOURCES:
        if name in resources.keys():
            value = resources[name]
            if hasattr(value, "is_evaluable"):  # a rule's snakemake.resources.Resource, not a job's value
                value = None if value.is_evaluable() else value.value
            found[name] = value
    return found


def _job_key(job) -> tuple:
    return job.rule.name, sorted(job.wildcards.items())


def _build(config_files: Sequence[str], entries: Sequence[str], workdir: Path, rules_only: bool = False) -> dict:
    """What `python -m arelbo.planning.dag` prints (Snakemake runs in this process)."""
    from snakemake.api import SnakemakeApi
    from snakemake.cli import parse_config
    from snakemake.settings.types import ConfigSettings, DAGSettings, OutputSettings, ResourceSettings

    with tempfile.TemporaryDirectory() as tmp, SnakemakeApi(OutputSettings(dryrun=True)) as api:
        logdir = Path(tmp) / "logs"
        try:
            config = {**parse_config(list(entries)), "outdir": f"{tmp}/out", "logdir": str(logdir)}
            workflow_api = api.workflow(
                # cores enough for every rule's own threads (Snakemake lowers a job's threads to --cores)
                resource_settings=ResourceSettings(cores=256),
                config_settings=ConfigSettings(config=config, configfiles=[Path(f) for f in config_files]),
                snakefile=workdir / "Snakefile",
                workdir=workdir,
            )
            workflow_api.dag(DAGSettings(forceall=True))  # binds the settings to the workflow below
            workflow = workflow_api._workflow  # the parsed workflow (what the API's own commands use)
            rules = {rule.name: _resources(rule.resources) for rule in workflow.rules}
            if rules_only:
                return {"rules": rules}
            # as `snakemake --dry-run --forceall` and `--dag` build it; no lock on the working tree
            workflow._prepare_dag(forceall=True, ignore_incomplete=True, lock_warn_only=True, nolock=True)
            workflow._build_dag()
            dag = workflow.dag
            # a job's benchmark file relative to the run's own log folder (arelbo.core.layout.run_logs,
            # named after this DAG's temporary outdir), as a finished run's folder holds it
            run_logs = Path(workflow.globals["LOGS"])
            jobs = [
                {
                    "rule": job.rule.name,
                    "wildcards": dict(job.wildcards.items()),
                    "benchmark": str(Path(job.benchmark).relative_to(run_logs)) if job.benchmark else None,
                    "resources": _resources(job.resources),
                    "threads": int(job.threads),
                }
                for layer in dag.toposorted()  # a job after the jobs it needs; within a layer, sorted
                for job in sorted(layer, key=_job_key)
                if dag.needrun(job)
            ]
        except Exception as error:
            api.print_exception(error)
            raise SystemExit(1) from None
    from arelbo.core.config import dump_config

    return {"jobs": jobs, "rules": rules, "config": dump_config(workflow.globals["CFG"])}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m arelbo.planning.dag", description=__doc__.split("\n\n")[0])
    parser.add_argument("config_files", nargs="*", help="config files, merged in order over config/config.yaml")
    parser.add_argument("--config-entry", action="append", default=[], metavar="KEY=VALUE", help="as --config")
    parser.add_argument("--rules-only", action="store_true", help="parse the workflow; print its rules only")
    args = parser.parse_args(argv)
    stdout, sys.stdout = sys.stdout, sys.stderr  # whatever the workflow prints: stdout is the JSON's
    try:
        data = _build(args.config_files, args.config_entry, Path.cwd(), rules_only=args.rules_only)
    finally:
        sys.stdout = stdout
    json.dump(data, sys.stdout)


if __name__ == "__main__":
    main()
