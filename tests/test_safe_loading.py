"""Every file arelbo reads from a results folder or resources/ loads without running code, and is
verified where it is read: a planted pickle payload is refused (its code never runs), a truncated
file gives one message naming the file and the fix, a cut checkpoint or FID reference cache is
rebuilt, and a cut tidy table stops the claims instead of changing their verdicts."""

from __future__ import annotations

import ast
import logging
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from arelbo.cli import main
from arelbo.core.safeload import UnreadableFile

REPO = Path(__file__).resolve().parents[1]


class _Payload:
    """What an attacker plants: unpickling it calls open(marker, "w"), creating the marker file."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture
def marker(tmp_path):
    path = tmp_path / "CODE_RAN"
    yield path
    assert not path.exists(), "a loader unpickled the planted payload: its code ran"


def _plant_torch(path: Path, marker: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": _Payload(marker), "format": _Payload(marker)}, path)
    return path


def _plant_pickle(path: Path, marker: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps({"format": _Payload(marker)}))
    return path


def _halve(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


# ---------------------------------------------------------------------------- a tiny training


class _Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.enc, self.dec = torch.nn.Linear(16, 4), torch.nn.Linear(4, 16)

    def forward(self, x):
        x = x.flatten(1)
        return (self.dec(self.enc(x) + 0.1 * torch.randn(len(x), 4)) - x).pow(2).sum(1).mean()


def _tiny_loss(net, x):
    loss = net(x)
    return loss, {"mse": loss.detach()}


def _fit_tiny(out: Path, *, keep_checkpoint: bool = False) -> Path:
    from arelbo.core.runtime import seed_everything
    from arelbo.stages.train import TrainSpec, fit

    g = torch.Generator().manual_seed(0)
    train = torch.randint(0, 256, (64, 1, 4, 4), generator=g, dtype=torch.uint8)
    val = torch.randint(0, 256, (32, 1, 4, 4), generator=g, dtype=torch.uint8)
    seed_everything(5)
    spec = TrainSpec("tiny", "mnist", 5, lr=1e-2, epochs=3, batch_size=16)
    return fit(
        _Tiny(),
        spec,
        train,
        val,
        _tiny_loss,
        out,
        device=torch.device("cpu"),
        progress=False,
        keep_checkpoint=keep_checkpoint,
    )


# ---------------------------------------------------------------------------- model.pt


def _encode(model_file: Path, tmp_path: Path) -> int:
    return main(
        ["encode", "--config", "config/ci.yaml", "--dataset", "mnist", "--model-file", str(model_file),
         "--out", str(tmp_path / "latents.npz")]
    )  # fmt: skip


def test_a_planted_model_pt_is_refused_by_the_encode_job(tmp_path, marker, capsys, ci_config):
    from arelbo.stages.section3 import load_point_model

    model_file = _plant_torch(tmp_path / "models" / "model.pt", marker)
    assert _encode(model_file, tmp_path) == 2
    err = capsys.readouterr().err
    assert str(model_file) in err and "pickled Python objects" in err and "delete it and re-run" in err
    with pytest.raises(UnreadableFile, match="pickled Python objects"):
        load_point_model(model_file)  # Section 3's model files: the same loader
    assert not (tmp_path / "latents.npz").exists()


def test_a_truncated_model_pt_is_one_clear_error(tmp_path, capsys, ci_config):
    from arelbo.stages.train import load_trained

    model_file = _halve(_fit_tiny(tmp_path / "run"))
    with pytest.raises(UnreadableFile, match=r"model\.pt is truncated or corrupt .*delete it and re-run"):
        load_trained(model_file)
    assert _encode(model_file, tmp_path) == 2
    assert "truncated or corrupt" in capsys.readouterr().err


# ---------------------------------------------------------------------------- checkpoint.pt


@pytest.mark.parametrize("damage", ["planted", "truncated"])
def test_a_bad_checkpoint_is_discarded_and_training_restarts(tmp_path, marker, caplog, damage):
    from arelbo.stages.train import CHECKPOINT, load_checkpoint

    straight = torch.load(_fit_tiny(tmp_path / "straight"), weights_only=True)
    run = tmp_path / "run"
    _fit_tiny(run, keep_checkpoint=True)
    ckpt = run / CHECKPOINT
    assert load_checkpoint(ckpt)["epoch"] == 3  # a real checkpoint reads with weights_only=True
    if damage == "planted":
        _plant_torch(ckpt, marker)
    else:
        _halve(ckpt)
    (run / "model.pt").unlink()
    with caplog.at_level(logging.WARNING, logger="arelbo.stages.train"):
        again = torch.load(_fit_tiny(run), weights_only=True)
    assert any(f"discarding {ckpt}" in r.getMessage() and "training afresh" in r.getMessage() for r in caplog.records)
    assert not ckpt.exists()  # deleted: the next run does not stop on it either
    # trained from scratch: the same weights as a run that never had a checkpoint
    for key, value in straight["state_dict"].items():
        torch.testing.assert_close(again["state_dict"][key], value, rtol=0, atol=0)


# ---------------------------------------------------------------------------- estimators


def _second_stage():
    from arelbo.core.config import SecondStageSettings
    from arelbo.models.estimators import SecondStageEstimator, SecondStageVAE

    settings = SecondStageSettings(epochs=1, lr=1e-3, batch_size=8, lr_halve_every=1, hidden=8, depth=2)
    return SecondStageEstimator(SecondStageVAE(3, settings.hidden, settings.depth), settings)


@pytest.mark.parametrize("kind", ["prior", "gmm10", "2ndvae"])
def test_estimator_files_are_data_and_planted_or_truncated_ones_are_refused(tmp_path, marker, kind):
    from arelbo.models.estimators import fit_estimator, load_estimator, save_estimator

    if kind == "2ndvae":
        est = _second_stage()
    else:
        est = fit_estimator(kind, torch.randn(200, 3, generator=torch.Generator().manual_seed(0)), None, seed=0)
    path = tmp_path / f"{kind}.{'pt' if kind == '2ndvae' else 'pkl'}"
    save_estimator(est, path)
    assert torch.equal(load_estimator(path).sample(50, seed=1), est.sample(50, seed=1))
    assert not path.read_bytes().startswith(b"\x80")  # no pickle stream: a torch (zip) file

    _halve(path)
    with pytest.raises(UnreadableFile, match=rf"{kind}\.\w+ is truncated or corrupt .*fit the estimator again"):
        load_estimator(path)
    # planted: a pickle (the prior's and GMMs' old format) and a torch file of objects
    for plant in (_plant_pickle, _plant_torch):
        with pytest.raises(UnreadableFile, match=rf"{path}.*(pickle|pickled Python objects).*delete it and re-run"):
            load_estimator(plant(path, marker))


def test_a_payload_only_pickle_could_store_is_refused_when_saved(tmp_path):
    from arelbo.models.estimators import PriorEstimator, save_estimator

    class Odd(PriorEstimator):
        def payload(self):
            return {"object": object()}

    with pytest.raises(TypeError, match="'prior'.*data-only load refuses"):
        save_estimator(Odd(3), tmp_path / "odd.pkl")
    assert not (tmp_path / "odd.pkl").exists()


# ---------------------------------------------------------------------------- FID reference


def _features_net():
    """A stand-in for Inception: 12 features per image (the cache logic is what is tested)."""
    calls = {"n": 0}

    class Net(torch.nn.Module):
        def forward(self, x):
            calls["n"] += 1
            return torch.nn.functional.adaptive_avg_pool2d(x, 2).flatten(1)

    return Net(), calls


def _reference(cache: Path, weights: Path, net) -> dict:
    from arelbo.metrics.fid import reference_stats

    images = np.random.default_rng(0).integers(0, 256, (20, 3, 8, 8), dtype=np.uint8)
    return reference_stats(
        cache, lambda: images, dataset="mnist", split="test", count=20, weights_path=weights, model=net,
        device="cpu", progress=False,
    )  # fmt: skip


@pytest.mark.parametrize("damage", ["planted", "truncated"])
def test_a_bad_fid_reference_cache_is_rebuilt(tmp_path, marker, damage):
    weights = tmp_path / "weights.pth"
    weights.write_bytes(b"stand-in weights: only their digest is read")
    cache = tmp_path / "mnist-test-n20.npz"
    net, calls = _features_net()
    first = _reference(cache, weights, net)
    _reference(cache, weights, net)
    assert calls["n"] == 1  # a good cache is read, not recomputed
    if damage == "planted":
        np.savez(cache, mu=np.array([_Payload(marker)], dtype=object))
    else:
        _halve(cache)
    rebuilt = _reference(cache, weights, net)
    assert calls["n"] == 2
    np.testing.assert_array_equal(rebuilt["mu"], first["mu"])
    np.load(cache, allow_pickle=False)["features"]  # the cache on disk is whole again


@pytest.mark.parametrize("damage", ["planted", "truncated"])
def test_the_fid_job_refuses_a_bad_reference(tmp_path, marker, ci_config, damage):
    from arelbo.stages import evaluate

    reference = tmp_path / "reference.npz"
    if damage == "planted":
        np.savez(reference, n=np.array([_Payload(marker)], dtype=object))
    else:
        weights = tmp_path / "weights.pth"
        weights.write_bytes(b"stand-in")
        _reference(reference, weights, _features_net()[0])  # the real writer
        _halve(reference)
    problem = "holds pickled Python objects" if damage == "planted" else "is truncated or corrupt"
    with pytest.raises(UnreadableFile, match=rf"{reference} {problem}.*fid-reference job computes it again"):
        evaluate.fid(
            ci_config,
            "mnist",
            "vae",
            0,
            "prior",
            tmp_path / "s.npz",
            reference,
            tmp_path / "w.pth",
            tmp_path / "o.json",
        )


# ---------------------------------------------------------------------------- Inception weights


def test_planted_inception_weights_are_refused_where_verified_and_where_loaded(tmp_path, marker):
    from arelbo.metrics.inception_weights import WeightsError, build_inception, record_digest, verify_weights

    weights = _plant_torch(tmp_path / "pt_inception.pth", marker)
    with pytest.raises(WeightsError, match=rf"{weights} .*pickled Python objects.*arelbo provision inception"):
        verify_weights(weights)  # a file put there by hand is loaded once, as data
    record_digest(weights)  # even a planted digest beside it: the load itself runs no code
    with pytest.raises(WeightsError, match="pickled Python objects"):
        build_inception(weights)


# ---------------------------------------------------------------------------- metric records


def test_a_truncated_metric_record_stops_the_table_job(tmp_path, capsys, ci_config):
    from arelbo.stages.evaluate import _write_records

    record = {"table": 3, "dataset": "mnist", "model": "vae", "seed": 0, "metric": "mse", "value": 20.0,
              "config": "ci", "commit": "c0"}  # fmt: skip
    path = tmp_path / "mse.json"
    _write_records(path, [record])
    assert (
        main(["table", "--config", "config/ci.yaml", "--table", "3", "--outdir", str(tmp_path / "t"), str(path)]) == 0
    )
    _halve(path)
    capsys.readouterr()
    assert (
        main(["table", "--config", "config/ci.yaml", "--table", "3", "--outdir", str(tmp_path / "u"), str(path)]) == 2
    )
    err = capsys.readouterr().err
    assert f"{path} is truncated or corrupt" in err and "re-run to compute the metric again" in err


# ---------------------------------------------------------------------------- tidy tables


def _tidy_table(results: Path) -> Path:
    """table3_tidy.csv written by the table writer from records with provenance columns."""
    from arelbo.reporting.tables import tidy_from_records, write_table_outputs

    records = [
        {"table": 3, "dataset": "mnist", "model": model, "seed": seed, "metric": metric, "value": value + seed,
         "config": "hand", "commit": "c0", "uncertainty": 0.5, "n_samples": 100, "n_reference": 100,
         "converged": True, "convergence": "converged", "reduced": False}
        for model, value in (("iso_i_arelbo", 10.0), ("iso_i_trainable", 20.0), ("vae", 30.0))
        for seed in (0, 1)
        for metric in ("mse", "fid_gmm10", "kid_gmm10")
    ]  # fmt: skip
    return write_table_outputs(tidy_from_records(records), 3, results, config_name="hand", reduced=False)["tidy"]


def test_a_cut_tidy_table_stops_the_claims(tmp_path, capsys):
    results = tmp_path / "run"
    tidy = _tidy_table(results)
    text = tidy.read_text()
    assert main(["claims", "--results", str(results), "--no-write"]) == 0
    header, last = text.splitlines()[0].split(","), text.splitlines()[-1]
    # cut mid-row, after the columns check_tidy requires: pandas reads the row with empty provenance
    keep = len(",".join(last.split(",")[: header.index("commit") + 1])) + 2
    tidy.write_text(text[: len(text) - len(last) - 1 + keep])
    capsys.readouterr()
    assert main(["claims", "--results", str(results), "--no-write"]) == 2
    err = capsys.readouterr().err
    assert str(tidy) in err and "fields: the file is truncated" in err and "re-run the table job" in err
    # cut at a row boundary: whole rows gone, the rest well formed
    tidy.write_text(text[: len(text) - len(last) - 1])
    assert main(["claims", "--results", str(results), "--no-write"]) == 2
    model = last.split(",")[header.index("model")]  # the last row in paper order
    assert f"incomplete: Table 3 (dataset mnist), model {model}, seed 1: no kid_gmm10" in capsys.readouterr().err


def test_completeness_is_what_the_tables_own_rows_imply(tmp_path):
    """The expected rows come from the table: a metric only some models have (σx²) is not required
    of the others, and a missing seed of one model is."""
    import pandas as pd

    from arelbo.reporting.tables import check_complete, check_tidy

    tidy = pd.read_csv(_tidy_table(tmp_path))
    extra = tidy[(tidy["model"] == "iso_i_arelbo") & (tidy["metric"] == "mse")].assign(metric="sigma_x2")
    check_complete(check_tidy(pd.concat([tidy, extra])))
    with pytest.raises(ValueError, match="model iso_i_arelbo, seed 1: no sigma_x2"):
        check_complete(check_tidy(pd.concat([tidy, extra[extra["seed"] == 0]])))
    with pytest.raises(ValueError, match="model vae, seed 1: no fid_gmm10, kid_gmm10, mse"):
        check_complete(check_tidy(tidy[~((tidy["model"] == "vae") & (tidy["seed"] == 1))]))


# ---------------------------------------------------------------------------- every loader


def _calls(name: str):
    """(path, line, call) of every call of `<something>.<name>(...)` in the package."""
    for path in sorted((REPO / "arelbo").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == name:
                yield path.relative_to(REPO), node.lineno, node


def _keyword(call: ast.Call, name: str):
    return next((k.value.value for k in call.keywords if k.arg == name and isinstance(k.value, ast.Constant)), None)


def test_every_loader_in_the_package_is_data_only():
    """torch < 2.6 (pyproject allows 2.5) unpickles anything unless told weights_only=True, and
    np.load's allow_pickle is said explicitly: no loader may rely on a version's default."""
    torch_loads = [(p, n) for p, n, c in _calls("load") if ast.unparse(c.func) == "torch.load"]
    assert torch_loads, "the scan found no torch.load: it is out of date"
    assert [(p, n) for p, n, c in _calls("load") if ast.unparse(c.func) == "torch.load"
            and _keyword(c, "weights_only") is not True] == []  # fmt: skip
    assert [(p, n) for p, n, c in _calls("load") if ast.unparse(c.func) in ("np.load", "numpy.load")
            and _keyword(c, "allow_pickle") is not False] == []  # fmt: skip
    unpickles = [
        (p, n) for name in ("load", "loads") for p, n, c in _calls(name) if ast.unparse(c.func).startswith("pickle.")
    ]
    assert unpickles == []
