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
    (tests/e2e_run.py). Not asserted here: the tests that read it need a finished one."""
    from e2e_run import run_batched

    return run_batched(tmp_path_factory.mktemp("batched_run"))


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


def pytest_collection_modifyitems(items):
    """Tests that read a shared end-to-end run are end-to-end runs too (marker `e2e`)."""
    for item in items:
        if {"e2e_run", "batched_run"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.e2e)
