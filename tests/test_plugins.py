"""Plugins (docs/extending.md): a package registers models and estimators through arelbo.core.registry,
and they are validated, trained, scored and tabulated like the paper's, with no change to arelbo."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from arelbo.core.config import ConfigError, load_config

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "arelbo-example-plugin"
OVERLAY = {
    "plugins": ["arelbo_example_plugin"],
    "models": ["vae", "beta_vae"],
    "estimators": ["prior", "gmm10", "gmmdiag"],
}


def test_the_example_plugin_passes_the_conformance_checks(example_plugin):
    from arelbo.testing import check_estimator, check_model

    check_model("beta_vae", batch_size=2)
    check_estimator("gmmdiag", n=300)


def test_a_config_names_its_plugins_and_their_ids_validate(restored_registry, monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLE))
    cfg = load_config(
        "config/ci.yaml",
        check_folders=False,
        overrides={
            **OVERLAY,
            "hparams": {"beta_vae": {"mnist": {"beta": 2.0}}},
            "estimator_settings": {"gmmdiag": {"components": 5}},
        },
    )
    assert cfg.models == ("vae", "beta_vae") and cfg.plugins == ("arelbo_example_plugin",)
    assert cfg.estimator_settings("gmmdiag") == {"components": 5}
    from arelbo.stages.train import model_hparams

    assert model_hparams(cfg, "beta_vae", "mnist") == {"beta": 2.0}
    assert model_hparams(cfg, "beta_vae", "celeba") == {"beta": 4.0}  # the plugin's default
    entry = restored_registry.MODELS["beta_vae"]
    assert not entry.paper and entry.source == "arelbo_example_plugin"


@pytest.mark.parametrize(
    "overrides,message",
    [
        ({"hparams": {"beta_vae": {"mnist": {"beta": -1.0}}}}, r"hparams\.beta_vae\.mnist\.beta"),
        ({"hparams": {"beta_vae": {"mnist": {"gamma": 1.0}}}}, r"hparams\.beta_vae\.mnist.*gamma"),
        ({"models": ["vae", "beta_vea"]}, r"models.*beta_vea"),
        ({"estimators": ["gmmdaig"]}, r"estimators.*gmmdaig"),
        (
            {"plugins": ["arelbo_no_such_plugin"]},
            r"plugin 'arelbo_no_such_plugin' \(from config `plugins`\) failed to import: ModuleNotFoundError",
        ),
    ],
)
def test_bad_plugin_input_is_one_clear_message_before_any_job(restored_registry, monkeypatch, overrides, message):
    monkeypatch.syspath_prepend(str(EXAMPLE))
    with pytest.raises(ConfigError, match=message):
        load_config("config/ci.yaml", check_folders=False, overrides={**OVERLAY, **overrides})


def _plugin_module(tmp_path, monkeypatch, name, body):
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(body))
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


@pytest.mark.parametrize(
    "body,message",
    [
        (
            "ARELBO_PLUGIN_API = 2\ndef register(r): pass\n",
            "declares ARELBO_PLUGIN_API = 2; this arelbo implements plugin API 1",
        ),
        ("ARELBO_PLUGIN_API = 1\n", "has no register"),
        (
            "ARELBO_PLUGIN_API = 1\ndef register(r):\n"
            "    r.add_model(id='vae', label='mine', objective='m:f', stochastic=True,"
            " decoder_variance=None, has_prior=True)\n",
            "'vae' is already registered by arelbo",
        ),
        (
            "ARELBO_PLUGIN_API = 1\ndef register(r):\n"
            "    r.add_model(id='ok_model', label='ok', objective='m:f', stochastic=True,"
            " decoder_variance=None, has_prior=True)\n"
            "    r.add_estimator(id='gmm_x', label='x', fit='m:f', load='m:g')\n",
            "'gmm_x'.*letters and digits only",
        ),
        ("raise RuntimeError('broken on import')\n", "failed to import: RuntimeError: broken on import"),
    ],
)
def test_a_failing_plugin_is_named_and_leaves_the_registry_unchanged(
    restored_registry, tmp_path, monkeypatch, body, message
):
    name = _plugin_module(tmp_path, monkeypatch, "plugin_bad", body)
    before = (dict(restored_registry.MODELS), dict(restored_registry.ESTIMATORS))
    with pytest.raises(restored_registry.PluginError, match=f"plugin 'plugin_bad'.*{message}|{message}"):
        restored_registry.load_plugin(name)
    assert (restored_registry.MODELS, restored_registry.ESTIMATORS) == before  # nothing half-registered


def test_installed_packages_register_through_their_entry_point(restored_registry, monkeypatch):
    import importlib.metadata

    monkeypatch.syspath_prepend(str(EXAMPLE))
    point = importlib.metadata.EntryPoint("example", "arelbo_example_plugin", "arelbo.plugins")
    monkeypatch.setattr(
        importlib.metadata, "entry_points", lambda group=None: [point] if group == "arelbo.plugins" else []
    )
    restored_registry.load_plugins([])
    assert "beta_vae" in restored_registry.MODELS and "gmmdiag" in restored_registry.ESTIMATORS


def _records(models, metrics, value=50.0):
    return [
        {
            "table": 3,
            "dataset": "mnist",
            "model": m,
            "seed": 0,
            "metric": k,
            "value": value + i,
            "config": "ci",
            "commit": "x",
        }
        for i, m in enumerate(models)
        for k in metrics
    ]


def test_plugin_rows_follow_the_papers_and_are_marked_not_in_the_paper(example_plugin):
    from arelbo.reporting.tables import compare_with_paper, paper_shaped, tidy_from_records, to_latex

    metrics = ["mse", "fid_prior", "fid_2ndvae", "fid_gmm10", "fid_gmmdiag"]
    tidy = tidy_from_records(_records(["beta_vae", "iso_i_arelbo", "vae"], metrics))
    shaped = paper_shaped(tidy, 3)
    assert list(shaped.index) == ["vae", "iso_i_arelbo", "beta_vae"]  # the paper's order, then the plugin's
    assert shaped.loc["beta_vae", "label"] == "beta-VAE (beta = 4)"
    assert list(shaped.columns[1:]) == [
        "mnist/mse",
        "mnist/fid_prior",
        "mnist/fid_2ndvae",
        "mnist/fid_gmm10",
        "mnist/fid_gmmdiag",
    ]
    vs = compare_with_paper(tidy, 3).set_index(["model", "metric"])
    assert set(vs.loc[vs["note"] == "not in the paper"].index) == {("beta_vae", m) for m in metrics} | {
        (m, "fid_gmmdiag") for m in ("vae", "iso_i_arelbo")
    }
    assert vs.loc[("vae", "mse"), "note"] == "" and vs.loc[("vae", "mse"), "paper"] == 20.25
    assert vs.loc[vs["note"] != "", "paper"].isna().all()
    tex = to_latex(tidy, 3, config_name="ci", reduced=True)
    assert "beta-VAE (beta = 4)" in tex and "FID GMM-10 diag" in tex


def test_claims_about_every_other_model_include_the_plugins_models(example_plugin):
    from arelbo.reporting.claims import _with_plugin_models, load_claims

    claims = load_claims()
    tidy = {3: pd.DataFrame(_records(["vae", "beta_vae"], ["fid_prior"]))}
    groups = _with_plugin_models(claims, tidy)
    assert groups["not_arelbo"] == claims["groups"]["not_arelbo"] + ["beta_vae"]
    assert groups["arelbo"] == claims["groups"]["arelbo"]  # a family of the paper's stays as it is
    assert (
        _with_plugin_models(claims, {3: pd.DataFrame(_records(["vae"], ["fid_prior"]))})["not_arelbo"]
        == claims["groups"]["not_arelbo"]
    )  # registered but not run: not compared


def _env():
    from e2e_run import plugin_env

    return plugin_env()


def test_the_cli_offers_a_configs_plugin_ids(tmp_path):
    overlay = EXAMPLE / "example.yaml"
    out = subprocess.run(
        [sys.executable, "-m", "arelbo", "fit", "--config", "config/ci.yaml", "--config", str(overlay), "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=_env(),
    )
    assert out.returncode == 0 and "gmmdiag" in out.stdout, out.stderr
    bare = subprocess.run([sys.executable, "-m", "arelbo", "fit", "--help"], cwd=REPO, capture_output=True, text=True)
    assert "gmmdiag" not in bare.stdout


def test_the_workflow_plans_a_plugins_model_and_estimator_like_the_papers(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "-n",
            "--cores",
            "2",
            "--configfile",
            "config/ci.yaml",
            str(EXAMPLE / "example.yaml"),
            "--config",
            f"outdir={tmp_path}/out",
            f"logdir={tmp_path}/logs",
            "--",
            f"{tmp_path}/out/table3.tex",
            f"{tmp_path}/out/table4.tex",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=_env(),
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    planned = result.stdout
    for path in (
        "models/mnist/beta_vae/seed0/model.pt",
        "estimators/mnist/beta_vae/seed0/gmmdiag.pkl",
        "estimators/celeba/vae/seed0/gmmdiag.pkl",
        "metrics/mnist/beta_vae/seed0/fid_gmmdiag.json",
        "metrics/celeba/beta_vae/seed0/fid_interp_mid.json",
    ):
        assert path in planned, path


@pytest.mark.slow
def test_the_example_plugin_runs_through_the_batched_layout_into_tables_1_3_4_5(batched_run):
    """The worked example, end to end on config/ci.yaml (MNIST): its model is trained, encoded and
    scored with the paper's estimators and its own, and both land in Tables 3 and 4.

    The run (tests/e2e_run.py, fixture `batched_run`) is also the suite's end-to-end run of the
    batched job layout that config/ci.yaml and the GPU check use (the paper config's
    per-cell layout: fixture `e2e_run`): one sample-and-score job per model, one second-stage job for
    the dataset's models, one training job per Section 3 group, each under its own log folder and
    cost row. Until 2026-12-07 a run of config/ci.yaml of its own covered that layout, with CelebA;
    the batched rules of both datasets come from one template in workflow/rules, and the dry-run
    tests of tests/test_workflow.py plan them on both."""
    from arelbo.core import layout

    failure = batched_run.failure()
    assert failure is None, failure
    out = batched_run.out / "results"
    assert " " in str(out) and "ü" in str(out)  # the whole DAG ran under a folder users might name so
    t3 = pd.read_csv(out / "tables" / "table3_paper.csv", index_col=0, dtype=str, keep_default_na=False)
    assert list(t3.index) == ["vae", "ae", "beta_vae"] and t3.loc["beta_vae", "label"] == "beta-VAE (beta = 4)"
    assert t3.loc["beta_vae", "mnist/fid_gmmdiag"] not in ("", "–") and t3.loc["ae", "mnist/fid_prior"] == "–"
    defined = t3.drop(columns=["label", "mnist/fid_prior", "mnist/kid_prior (x1e3)"])
    assert defined.map(lambda c: c not in ("", "–")).all().all(), t3
    t4 = pd.read_csv(out / "tables" / "table4_paper.csv", index_col=0, dtype=str, keep_default_na=False)
    assert t4.loc["beta_vae"].drop("label").map(lambda c: c not in ("", "–")).all()
    vs = pd.read_csv(out / "tables" / "table3_vs_paper.csv", keep_default_na=False)
    assert set(vs.loc[vs["model"] == "beta_vae", "note"]) == {"not in the paper"}
    assert "beta-VAE (beta = 4)" in (out / "table3.tex").read_text()
    for n in (1, 5):
        table = pd.read_csv(out / "tables" / f"table{n}_paper.csv", index_col=0, dtype=str, keep_default_na=False)
        assert table.size and not (table == "").any().any() and not (table == "–").any().any(), table

    # the batched layout's own jobs, each with its log and its cost row
    logs = layout.run_logs(batched_run.out / "logs", "ci", batched_run.out / "results")
    assert sorted(p.stem for p in (logs / "evaluate").rglob("*.log")) == ["seed0"] * 3  # one job per model
    assert list((logs / layout.SECTION3_FOLDER).rglob(f"{layout.batched_seed_folder('0')}/train.log"))
    # read by `arelbo costs` itself (the workflow's costs job runs in the per-cell run, fixture `e2e_run`)
    costs_csv = batched_run.out / "costs.csv"
    costs_cmd = [sys.executable, "-m", "arelbo", "costs", "--logs", str(logs), "--out", str(costs_csv)]
    assert subprocess.run(costs_cmd, cwd=REPO, capture_output=True).returncode == 0
    costs = pd.read_csv(costs_csv)
    # second_stage.batched: one job fitted the dataset's three second stages (each .pt is used above)
    assert list(costs.loc[costs["job"] == "estimators/2ndvae (batched)", "dataset"]) == ["mnist"]
    assert costs.loc[costs["stage"] == "evaluate", "model"].tolist().count("beta_vae") == 1
