"""Shared fixtures. `make test` provisions MNIST and the Inception weights into ./resources first;
the fixtures below provision on demand too, so a bare `pytest` also works."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RESOURCES = REPO / "resources"
# Config paths are relative to the working directory (as in Snakemake): run from the repo root.
os.chdir(REPO)

# `make test` runs two pytest-xdist workers. Each worker, and every process it starts, gets its share
# of the CPUs as torch's thread count (one each on a 2-core machine): two workers whose thread pools
# each span every core fight over them (OpenMP threads spin while they wait for each other). Set
# before any test imports torch; an explicit OMP_NUM_THREADS wins.
if "PYTEST_XDIST_WORKER_COUNT" in os.environ:
    _cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, _cpus // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))))

# The suite's own processes run with the allocator the `arelbo` command sets up (its subprocesses
# set it themselves): tests that train in-process then run as fast as the jobs they stand for.
from arelbo.core import allocator  # noqa: E402

allocator.configure()


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def mnist_raw_dir() -> Path:
    from arelbo.core import layout
    from arelbo.stages.provision import provision_mnist

    return provision_mnist(layout.mnist_raw_dir(RESOURCES))


@pytest.fixture(scope="session")
def ci_config(mnist_raw_dir):
    """config/ci.yaml with the repo's resources (MNIST subsets + a synthetic CelebA stand-in)."""
    from arelbo.core import layout
    from arelbo.core.config import load_config
    from arelbo.stages.provision import make_celeba_fixture

    cfg = load_config(REPO / "config" / "ci.yaml", check_folders=False)
    standin = cfg.data.celeba.synthetic_standin
    if layout.celeba_folder(cfg.data.celeba.root) is None:
        make_celeba_fixture(Path(cfg.data.celeba.root), standin.n, standin.seed)
    return load_config(REPO / "config" / "ci.yaml")


@pytest.fixture(scope="session")
def e2e_run(tmp_path_factory, ci_config):
    """The suite's run of the workflow's default target on the paper configuration with only sizes
    changed, in the per-cell job layout (tests/e2e_run.py). ci_config provisions the CelebA stand-in
    it reads as a download. Not asserted here: the tests that read it need a finished one."""
    from e2e_run import run_e2e

    return run_e2e(tmp_path_factory.mktemp("e2e_run"), ci_config.data.celeba.root)


@pytest.fixture(scope="session")
def batched_run(tmp_path_factory, ci_config):
    """The suite's run of config/ci.yaml's batched job layout with the example plugin, on MNIST
    (tests/e2e_run.py), in a folder whose name has a space and a non-ASCII letter: every path the
    workflow hands a shell must survive it. Not asserted here: the tests that read it need a finished one."""
    from e2e_run import run_batched

    return run_batched(tmp_path_factory.mktemp("batched run ü"))


@pytest.fixture
def in_repo(monkeypatch):
    monkeypatch.chdir(REPO)
    return REPO


EXAMPLE_PLUGIN = REPO / "examples" / "arelbo-example-plugin"


@pytest.fixture
def restored_registry():
    """arelbo.core.registry as it was before the test, whatever plugins the test loads."""
    import sys

    from arelbo.core import registry

    saved = (dict(registry.MODELS), dict(registry.ESTIMATORS), dict(registry._LOADED))
    modules = set(sys.modules)
    yield registry
    for table, before in zip((registry.MODELS, registry.ESTIMATORS, registry._LOADED), saved):
        table.clear()
        table.update(before)
    for name in set(sys.modules) - modules:  # a plugin imported here is imported afresh next time
        if name.startswith(("arelbo_example_plugin", "plugin_")):
            sys.modules.pop(name, None)


@pytest.fixture
def example_plugin(restored_registry, monkeypatch):
    """The worked example plugin (examples/arelbo-example-plugin) importable and registered; no
    other test sees its rows."""
    monkeypatch.syspath_prepend(str(EXAMPLE_PLUGIN))
    restored_registry.load_plugin("arelbo_example_plugin")
    return restored_registry


@pytest.fixture(scope="module")
def one_torch_thread():
    """For modules of tiny networks (`pytestmark = pytest.mark.usefixtures("one_torch_thread")`): one
    thread is ~10× faster there than two fighting over a busy CPU."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


SHARED_RUNS = ("e2e_run", "batched_run")  # session fixtures: one end-to-end run each, read by many tests


def _shared_state(item) -> str | None:
    """What `item` shares with other tests that must not be computed twice: a shared end-to-end run,
    or (its module's name) a module- or session-scoped fixture defined in its own module."""
    names = set(getattr(item, "fixturenames", ()))
    for run in SHARED_RUNS:
        if run in names:
            return run
    module = getattr(getattr(item, "module", None), "__name__", None)
    fixture_defs = getattr(getattr(item, "_fixtureinfo", None), "name2fixturedefs", {})
    for name in names:
        for fixture_def in fixture_defs.get(name, ()):
            if fixture_def.scope in ("module", "session") and fixture_def.func.__module__ == module:
                return module
    return None


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the xdist_group marks
def pytest_collection_modifyitems(items):
    """Tests that read a shared end-to-end run are end-to-end runs too (marker `e2e`).

    Under pytest-xdist (`make test`: `--dist loadgroup`), tests that share state (`_shared_state`) go
    to one worker as one unit (marker `xdist_group`), so a run or a module fixture is computed once;
    every other test is its own unit. The end-to-end units come first: they are the longest, and a
    long unit started last would leave the other worker idle while it runs."""
    for item in items:
        shared = _shared_state(item)
        if shared in SHARED_RUNS:
            item.add_marker(pytest.mark.e2e)
        if shared is not None:
            item.add_marker(pytest.mark.xdist_group(shared))
    items.sort(key=lambda item: item.get_closest_marker("e2e") is None)  # stable: file order otherwise
