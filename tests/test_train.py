"""The trainer: batches from memory, exact resume after a kill, a clear stop on NaN, logs, and a
short real MNIST run that lowers the validation objective of every model."""
from __future__ import annotations

import csv
import math
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
import yaml

from arelbo.objectives import MODELS
from arelbo.train import (CHECKPOINT, LOG, MODEL, Batches, TrainingDiverged, TrainSpec, fit, load_trained,
                          model_hparams, model_loss_fn, run_epoch)

REPO = Path(__file__).resolve().parents[1]


def test_batches_cover_every_image_once_per_epoch():
    images = torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1)
    batches = Batches(images, batch_size=4)
    assert len(batches) == 3
    seen = torch.cat([b.flatten() for b in batches.epoch(torch.Generator().manual_seed(1))])
    assert sorted((seen * 255).round().int().tolist()) == list(range(10))
    again = torch.cat([b.flatten() for b in batches.epoch(torch.Generator().manual_seed(1))])
    assert torch.equal(seen, again)  # the generator alone decides the order
    assert all(0 <= v <= 1 for v in seen.tolist())  # floats in [0, 1]


def test_config_hparams_are_the_registry_defaults(ci_config):
    # config/config.yaml spells out SPEC §4's values; they must agree with the registry's defaults.
    for model_id, spec in MODELS.items():
        for dataset in ("mnist", "celeba"):
            assert model_hparams(ci_config, model_id, dataset) == dict(spec.defaults.get(dataset, {}))


def _overlay(tmp_path, **train) -> Path:
    path = tmp_path / "overlay.yaml"
    path.write_text(yaml.safe_dump({"train": {"mnist": train}}))
    return path


def _train_cmd(overlay: Path, out: Path, model: str = "iso_i_arelbo") -> list[str]:
    return [sys.executable, "-m", "arelbo", "train", "--config", "config/ci.yaml", "--config", str(overlay),
            "--dataset", "mnist", "--model", model, "--seed", "3", "--out", str(out), "--no-progress",
            "--threads", "1"]


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_weights(tmp_path, ci_config):
    overlay = _overlay(tmp_path, lr=1e-3, epochs=4, batch_size=64)
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    subprocess.run(_train_cmd(overlay, straight), cwd=REPO, check=True, env=env, capture_output=True)

    proc = subprocess.Popen(_train_cmd(overlay, killed), cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        ckpt = killed / CHECKPOINT
        if ckpt.is_file():
            try:
                if torch.load(ckpt, weights_only=False)["epoch"] >= 2:
                    break
            except Exception:  # being replaced right now; atomic rename means never half-read twice
                pass
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed; make it longer"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / MODEL).exists()  # no finished-looking output after a kill
    subprocess.run(_train_cmd(overlay, killed), cwd=REPO, check=True, env=env, capture_output=True)

    a = torch.load(straight / MODEL, weights_only=False)
    b = torch.load(killed / MODEL, weights_only=False)
    assert a["best_epoch"] == b["best_epoch"]
    for name, tensor in a["state_dict"].items():
        assert torch.equal(tensor, b["state_dict"][name]), name
    rows_a = list(csv.DictReader(open(straight / LOG)))
    rows_b = list(csv.DictReader(open(killed / LOG)))
    assert [r["val_loss"] for r in rows_a] == [r["val_loss"] for r in rows_b] and len(rows_a) == 4


def test_non_finite_loss_stops_with_model_epoch_and_step(tmp_path, ci_config):
    from arelbo.data import load_split
    from arelbo.nets import build_net

    real = model_loss_fn("vae", "mnist", {})
    calls = {"n": 0}

    def poisoned(net, x):
        loss, terms = real(net, x)
        calls["n"] += 1
        return (loss * float("nan") if calls["n"] == 3 else loss), terms

    spec = TrainSpec("vae", "mnist", 0, lr=1e-3, epochs=2, batch_size=64)
    with pytest.raises(TrainingDiverged) as info:
        fit(build_net("vae", "mnist"), spec, load_split("mnist", "train", ci_config)[:256],
            load_split("mnist", "val", ci_config)[:64], poisoned, tmp_path, device=torch.device("cpu"),
            progress=False)
    message = str(info.value)
    assert "vae on mnist" in message and "epoch 1" in message and "step 2" in message
    assert not (tmp_path / MODEL).exists()


def test_cli_reports_divergence_as_a_clear_error(tmp_path, ci_config):
    overlay = _overlay(tmp_path, lr=1e30, epochs=1, batch_size=64)
    result = subprocess.run(_train_cmd(overlay, tmp_path / "out", model="diag_d_trainable"), cwd=REPO,
                            capture_output=True, text=True)
    if result.returncode == 0:
        pytest.skip("this learning rate did not diverge on this platform")
    assert result.returncode == 2 and "non-finite loss" in result.stderr and "diag_d_trainable" in result.stderr
    assert not (tmp_path / "out" / MODEL).exists()


@pytest.mark.slow
@pytest.mark.parametrize("model_id", sorted(MODELS))
def test_short_mnist_run_lowers_the_validation_objective(model_id, tmp_path, ci_config):
    from arelbo.data import load_split
    from arelbo.nets import build_net
    from arelbo.runtime import seed_everything

    seed_everything(0)
    net = build_net(model_id, "mnist")
    hparams = model_hparams(ci_config, model_id, "mnist")
    loss_fn = model_loss_fn(model_id, "mnist", hparams)
    train = load_split("mnist", "train", ci_config, limit=1024)
    val = load_split("mnist", "val", ci_config, limit=256)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        with torch.set_grad_enabled(loss_fn.needs_grad):
            before = run_epoch(net, Batches(val, 64), loss_fn)["loss"]
    spec = TrainSpec(model_id, "mnist", 0, lr=1e-3, epochs=2, batch_size=64, hparams=hparams)
    model_file = fit(net, spec, train, val, loss_fn, tmp_path, device=torch.device("cpu"), progress=False)
    meta = torch.load(model_file, weights_only=False)
    assert math.isfinite(meta["best_val_loss"]) and meta["best_val_loss"] < before, (before, meta["best_val_loss"])

    rows = list(csv.DictReader(open(tmp_path / LOG)))
    assert len(rows) == 2 and {"epoch", "lr", "seconds", "train_loss", "val_loss"} <= set(rows[0])
    if MODELS[model_id].stochastic:
        assert "train_kl" in rows[0] and "train_sigma_x2" in rows[0]
    if model_id == "iso_i_arelbo":
        # the implied sigma_x^2 of Iso-I AR-ELBO is the minibatch MSE / d
        assert float(rows[-1]["train_sigma_x2"]) == pytest.approx(float(rows[-1]["train_mse"]) / 784, rel=1e-5)
    net2, _ = load_trained(model_file)
    assert net2.config == net.config
