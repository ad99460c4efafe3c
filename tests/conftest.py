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
    from arelbo import layout
    from arelbo.provision import provision_mnist

    return provision_mnist(layout.mnist_raw_dir(RESOURCES))


@pytest.fixture(scope="session")
def ci_config(mnist_raw_dir):
    """config/ci.yaml with the repo's resources (MNIST subsets + a synthetic CelebA stand-in)."""
    from arelbo import layout
    from arelbo.config import load_config
    from arelbo.provision import make_celeba_fixture

    cfg = load_config(REPO / "config" / "ci.yaml", check_folders=False)
    standin = cfg.data.celeba.synthetic_standin
    if layout.celeba_folder(cfg.data.celeba.root) is None:
        make_celeba_fixture(Path(cfg.data.celeba.root), standin.n, standin.seed)
    return load_config(REPO / "config" / "ci.yaml")


@pytest.fixture
def in_repo(monkeypatch):
    monkeypatch.chdir(REPO)
    return REPO
