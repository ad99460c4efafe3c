"""The config schema catches bad input before any job runs, with messages that name key and fix."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from arelbo.core.config import Config, ConfigError, deep_merge, load_config, read_yaml

REPO = Path(__file__).resolve().parents[1]


def write(tmp_path, data, name="c.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("name", ["config.yaml", "quick.yaml", "ci.yaml"])
def test_shipped_configs_validate(name, in_repo):
    cfg = load_config(REPO / "config" / name, check_folders=False)
    assert isinstance(cfg, Config)
    assert cfg.fid.n_samples >= 1 and cfg.train.mnist.batch_size >= 1


def test_paper_config_is_the_spec(in_repo):
    cfg = load_config(check_folders=False)
    assert cfg.name == "paper" and not cfg.reduced and cfg.outdir == "results"
    assert len(cfg.models) == 13 and set(cfg.datasets) == {"mnist", "celeba"}
    assert (cfg.train.mnist.lr, cfg.train.mnist.epochs, cfg.train.mnist.batch_size) == (1e-3, 100, 64)
    assert (cfg.train.celeba.lr, cfg.train.celeba.epochs, cfg.train.celeba.batch_size) == (2e-4, 70, 64)
    assert cfg.fid.n_samples == 10000 and cfg.fid.reference_split == "test"
    assert cfg.data.mnist.val_size == 5000


def test_overlays_merge_key_by_key(in_repo):
    quick = load_config(REPO / "config" / "quick.yaml", check_folders=False)
    assert quick.datasets == ("mnist",) and quick.reduced
    # keys the overlay does not mention keep the paper's values
    assert quick.train.celeba.lr == 2e-4 and quick.fid.reference_split == "test"
    assert deep_merge({"a": {"b": 1, "c": 2}}, {"a": {"c": 3}}) == {"a": {"b": 1, "c": 3}}


@pytest.mark.parametrize(
    "overlay, expected",
    [
        ({"models": ["vae", "beta_vae"]}, "models[1]: 'beta_vae' is not a known id"),
        ({"datasets": ["mnist", "cifar10"]}, "datasets[1]: 'cifar10' is not a known id"),
        (
            {"estimators": ["gmm7"]},
            "estimators[0]: 'gmm7' is not a known id; choose one of prior, 2ndvae, gmm10, gmm100",
        ),
        ({"fid": {"n_samples": 0}}, "fid.n_samples: 0 is less than the minimum of 2"),
        ({"train": {"mnist": {"batch_size": -64}}}, "train.mnist.batch_size: -64 is less than the minimum of 1"),
        ({"train": {"celeba": {"lr": 0}}}, "train.celeba.lr: 0 is less than or equal to the minimum of 0"),
        ({"data": {"mnist": {"limit": {"train": 0}}}}, "data.mnist.limit.train"),
        ({"seeds": []}, "seeds: [] should be non-empty"),
        ({"fid": {"n_sample": 5}}, "check the spelling of the key"),
        ({"device": "gpu"}, "device: 'gpu' does not match"),
    ],
)
def test_bad_values_are_named(tmp_path, in_repo, overlay, expected):
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, overlay), check_folders=False)
    assert expected in str(info.value)


def test_celeba_without_a_root_is_caught_by_the_schema(tmp_path, in_repo):
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, {"data": {"celeba": {"root": None}}}), check_folders=False)
    message = str(info.value)
    assert "data.celeba.root" in message and "img_align_celeba" in message
    # ... but a config without CelebA does not need one
    load_config(write(tmp_path, {"datasets": ["mnist"], "data": {"celeba": {"root": None}}}), check_folders=False)


def test_every_problem_is_reported_at_once(tmp_path, in_repo):
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, {"models": ["x"], "seeds": [-1], "fid": {"batch_size": 0}}), check_folders=False)
    assert "(3 problems)" in str(info.value)


def test_missing_celeba_folder_names_what_is_missing(tmp_path, in_repo):
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, {"data": {"celeba": {"root": str(tmp_path / "nowhere")}}}))
    assert "img_align_celeba/ and list_eval_partition.txt" in str(info.value)


def test_snakemake_rejects_a_bad_config_before_any_job(tmp_path, in_repo):
    bad = write(tmp_path, {"models": ["vae", "vqvae"], "fid": {"n_samples": -1}, "outdir": str(tmp_path / "out")})
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--cores", "1", "--configfile", str(bad)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "'vqvae' is not a known id" in output and "fid.n_samples" in output
    assert not (tmp_path / "out").exists()  # nothing was written


def test_read_yaml_errors_are_clear(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        read_yaml(tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        read_yaml(tmp_path / "list.yaml")


def test_environment_yml_has_the_same_dependencies_as_pyproject():
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = set(project["dependencies"]) | {d for extra in project["optional-dependencies"].values() for d in extra}
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    pip = next(item["pip"] for item in env["dependencies"] if isinstance(item, dict))
    assert set(pip) - {"-e ."} == wanted


def test_outside_a_clone_arelbo_says_it_runs_from_one(tmp_path, monkeypatch, capsys):
    """A wheel install has no config/ nor workflow/ (arelbo.core.layout.REPO_ROOT finds them beside
    the package): the error says that arelbo runs from a clone, where it looked, and what to do."""
    from arelbo import cli
    from arelbo.core import config

    missing = tmp_path / "config" / "config.yaml"
    monkeypatch.setattr(config, "DEFAULT_CONFIG", missing)
    with pytest.raises(ConfigError, match="runs from a clone of its repository") as error:
        load_config()
    assert str(missing) in str(error.value) and "make provision" in str(error.value)
    assert cli.main(["config"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("arelbo config: error: arelbo runs from a clone") and str(missing) in err
    monkeypatch.undo()
    monkeypatch.setattr(config, "SCHEMA_PATH", tmp_path / "workflow" / "schemas" / "config.schema.yaml")
    with pytest.raises(ConfigError, match="runs from a clone") as error:
        config.load_schema()
    assert str(tmp_path / "workflow" / "schemas" / "config.schema.yaml") in str(error.value)
