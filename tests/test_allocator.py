"""The allocator every arelbo process runs with (arelbo.core.allocator): a training started as the
workflow starts it spends under 5 % of its steps' CPU time in the kernel, its model.pt bytes equal
those of a run under glibc's defaults, its log says which allocator ran, and a user's own allocator
or settings are left alone."""

from __future__ import annotations

import csv
import os
import subprocess

import pytest
import yaml
from test_train import REPO, _overlay, _train_cmd

from arelbo.core import allocator
from arelbo.stages.train import LOG, MODEL

DEFAULT = "glibc, mmap and trim thresholds"


@pytest.mark.parametrize(
    ("environ", "sets", "described"),
    [
        ({}, True, DEFAULT),
        ({"ARELBO_MALLOC": "system"}, False, "glibc defaults (ARELBO_MALLOC=system)"),
        ({"LD_PRELOAD": "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"}, False, "jemalloc (LD_PRELOAD)"),
        ({"LD_PRELOAD": "libtcmalloc_minimal.so.4", "ARELBO_MALLOC": "system"}, False, "tcmalloc (LD_PRELOAD)"),
        ({"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=1"}, False, "GLIBC_TUNABLES=glibc.malloc.trim_threshold=1"),
        ({"GLIBC_TUNABLES": "glibc.rtld.optional_static_tls=4096"}, True, DEFAULT),  # not a malloc setting
    ],
)
def test_the_environment_decides_and_the_decision_is_described(environ, sets, described):
    if not allocator._decision({})[0]:
        pytest.skip("not glibc on Linux: arelbo leaves the C library's allocator alone here")
    want, description = allocator._decision(environ)
    assert want is sets and described in description


def _train(tmp_path, name: str, **env) -> tuple[bytes, list[dict], str]:
    overlay = _overlay(tmp_path, lr=1e-3, epochs=3, batch_size=64)
    settings = yaml.safe_load(overlay.read_text())
    settings["data"] = {"mnist": {"limit": {"train": 1024, "val": 256}}}  # 16 steps an epoch
    overlay.write_text(yaml.safe_dump(settings))
    out = tmp_path / name
    environ = {k: v for k, v in os.environ.items() if k not in ("ARELBO_MALLOC", "GLIBC_TUNABLES", "LD_PRELOAD")}
    done = subprocess.run(
        _train_cmd(overlay, out), cwd=REPO, env={**environ, **env}, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return (out / MODEL).read_bytes(), list(csv.DictReader((out / LOG).open())), done.stderr


def _kernel_share(rows: list[dict]) -> float:
    steady = rows[1:]  # the first epoch grows the heap to its working size
    system = sum(float(r["cpu_system_s"]) for r in steady)
    return system / (system + sum(float(r["cpu_user_s"]) for r in steady))


@pytest.mark.slow
def test_a_training_started_as_the_workflow_starts_it_spends_little_in_the_kernel_and_equals_glibcs_defaults(
    tmp_path, ci_config
):
    if not allocator._decision({})[0]:
        pytest.skip("not glibc on Linux: arelbo leaves the C library's allocator alone here")
    kept, kept_rows, kept_log = _train(tmp_path, "kept")
    system, system_rows, system_log = _train(tmp_path, "system", ARELBO_MALLOC="system")
    assert f"allocator: {DEFAULT}" in kept_log and "allocator: glibc defaults (ARELBO_MALLOC=system)" in system_log
    share = _kernel_share(kept_rows)
    assert share < 0.05, (
        f"{share:.0%} of the training's CPU time went to the kernel (under glibc's defaults: "
        f"{_kernel_share(system_rows):.0%}): the allocator setting did not take effect"
    )
    assert kept == system  # where memory comes from changes no arithmetic: the same bytes
