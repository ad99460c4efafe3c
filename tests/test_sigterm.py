"""Stop signals and reproducible bytes: SIGTERM/SIGINT stop a training at its next step with a
checkpoint and a 128 + signal exit, the re-run resumes to what an uninterrupted run writes (model.pt
byte for byte), a killed checkpoint write's temporary is cleaned at the next start, and every record
says which torch thread count computed it."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from test_train import REPO, _overlay, _Tiny, _tiny_data, _tiny_loss, _train_cmd

from arelbo.core.config import CheckpointPolicy
from arelbo.stages.train import CHECKPOINT, LOG, MODEL, TIME_COLUMNS, TrainSpec, fit, fit_batched

# The paper config's cadence (config/config.yaml `train.checkpoint`): no periodic checkpoint in a short run
PAPER_CADENCE = CheckpointPolicy(every_epochs=10, every_minutes=10)
# _tiny_data with batch 16: 6 training and 2 validation steps an epoch
TRAIN_STEPS, VAL_STEPS = 6, 2


def _signal_at_call(signum: int, call: int, loss=_tiny_loss):
    """A loss that sends `signum` to this process at its `call`-th call (training and validation
    steps both count), as SLURM or Ctrl-C would at that moment."""
    calls = {"n": 0}

    def loss_fn(*args):
        calls["n"] += 1
        if calls["n"] == call:
            os.kill(os.getpid(), signum)
        return loss(*args)

    return loss_fn


def _fit_tiny(out: Path, loss_fn=_tiny_loss, epochs: int = 4) -> Path:
    from arelbo.core.runtime import seed_everything

    train, val = _tiny_data()
    seed_everything(5)
    spec = TrainSpec("tiny", "mnist", 5, lr=1e-2, epochs=epochs, batch_size=16)
    return fit(
        _Tiny(), spec, train, val, loss_fn, out, device=torch.device("cpu"), progress=False, checkpoints=PAPER_CADENCE
    )


def _log_without_seconds(path: Path) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in TIME_COLUMNS} for row in csv.DictReader(path.open())]


@pytest.mark.parametrize(
    ("signum", "call", "partial_steps"),
    [
        (signal.SIGTERM, TRAIN_STEPS + VAL_STEPS + 3, 3),  # epoch 2, after its 3rd step: mid-epoch
        (signal.SIGINT, 2 * (TRAIN_STEPS + VAL_STEPS), None),  # epoch 2's validation: stops at its end
    ],
    ids=["sigterm-mid-epoch", "sigint-at-epoch-end"],
)
def test_a_stop_signal_writes_a_checkpoint_and_the_rerun_equals_an_uninterrupted_run(
    tmp_path, signum, call, partial_steps
):
    straight = _fit_tiny(tmp_path / "straight")
    assert not (tmp_path / "straight" / CHECKPOINT).exists()
    handler_before = signal.getsignal(signum)

    stopped = tmp_path / "stopped"
    with pytest.raises(SystemExit) as info:
        _fit_tiny(stopped, _signal_at_call(signum, call))
    assert info.value.code == 128 + signum  # what a shell reports for a process killed by the signal
    assert signal.getsignal(signum) is handler_before  # the training's handler is gone with it
    assert not (stopped / MODEL).exists()
    ckpt = torch.load(stopped / CHECKPOINT, weights_only=True)  # plain types only: a safe load reads it
    if partial_steps is None:
        assert ckpt["epoch"] == 2 and "partial" not in ckpt
    else:
        assert ckpt["epoch"] == 1 and ckpt["partial"]["epoch"] == 2 and ckpt["partial"]["steps"] == partial_steps
    assert not [p.name for p in stopped.iterdir() if p.name.startswith(".")]  # no temporary left

    resumed = _fit_tiny(stopped)
    assert resumed.read_bytes() == straight.read_bytes()  # the same weights, metadata and bytes
    assert _log_without_seconds(stopped / LOG) == _log_without_seconds(tmp_path / "straight" / LOG)
    assert not (stopped / CHECKPOINT).exists()


def test_a_batched_training_stopped_by_sigterm_resumes_to_the_same_files(tmp_path):
    from arelbo.core.runtime import seed_everything

    train, val = _tiny_data()

    def run(name: str, loss_fn):
        seed_everything(5)
        models = [_Tiny() for _ in range(2)]
        specs = [
            TrainSpec(f"tiny{k}", "mnist", 5, lr=1e-2, epochs=3, batch_size=16, lr_plateau=False, keep="last")
            for k in range(2)
        ]
        return fit_batched(
            models,
            specs,
            torch.tensor([1.0, 0.5]),
            train,
            val,
            loss_fn,
            [tmp_path / name / f"m{k}" for k in range(2)],
            tmp_path / name / CHECKPOINT,
            device=torch.device("cpu"),
            progress=False,
            checkpoints=PAPER_CADENCE,
        )

    def scaled(model, x, value):
        loss, terms = _tiny_loss(model, x)
        return loss * value, terms

    straight = run("straight", scaled)
    with pytest.raises(SystemExit) as info:
        run("stopped", _signal_at_call(signal.SIGTERM, TRAIN_STEPS + VAL_STEPS + 4, scaled))
    assert info.value.code == 128 + signal.SIGTERM
    assert torch.load(tmp_path / "stopped" / CHECKPOINT, weights_only=True)["partial"]["steps"] == 4
    resumed = run("stopped", scaled)
    for a, b in zip(straight, resumed):
        assert a.read_bytes() == b.read_bytes()
        assert _log_without_seconds(a.parent / LOG) == _log_without_seconds(b.parent / LOG)


def test_a_stray_checkpoint_temporary_is_removed_at_the_next_start(tmp_path):
    # a real one: atomic_path's temporary, its process killed (os._exit) before the rename
    child = (
        "import os, sys\n"
        "from arelbo.core.runtime import atomic_path\n"
        "with atomic_path(sys.argv[1]) as tmp:\n"
        "    tmp.write_bytes(b'half a checkpoint')\n"
        "    os._exit(9)\n"
    )
    subprocess.run([sys.executable, "-c", child, str(tmp_path / CHECKPOINT)], cwd=REPO, check=False)
    strays = [p for p in tmp_path.iterdir() if p.name.startswith(f".{CHECKPOINT}.")]
    assert len(strays) == 1 and not (tmp_path / CHECKPOINT).exists()
    (tmp_path / "notes.txt").write_text("mine")
    _fit_tiny(tmp_path, epochs=1)
    assert not strays[0].exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([LOG, MODEL, "notes.txt"])


def test_two_trainings_of_one_config_and_seed_write_byte_identical_model_files(tmp_path):
    a, b = _fit_tiny(tmp_path / "a", epochs=2), _fit_tiny(tmp_path / "b", epochs=2)
    assert a.read_bytes() == b.read_bytes()


def test_equal_objects_saved_by_the_atomic_writer_are_equal_bytes(tmp_path):
    # checkpoint.pt and the second-stage estimator files go through the same writer
    from arelbo.core.runtime import atomic_torch_save

    state = {"w": torch.arange(6.0).view(2, 3), "rows": [{"epoch": 1, "lr": 1e-3}], "name": "x"}
    atomic_torch_save(tmp_path / "one" / CHECKPOINT, state)
    atomic_torch_save(tmp_path / "two.pt", state)
    assert (tmp_path / "one" / CHECKPOINT).read_bytes() == (tmp_path / "two.pt").read_bytes()


# ---------------------------------------------------------------------------- threads recorded


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_records_carry_the_thread_count_of_their_job_and_of_the_training(tmp_path, ci_config, restore_threads):
    import dataclasses

    from arelbo.core import layout
    from arelbo.core.provenance import provenance
    from arelbo.reporting.tables import tidy_from_records
    from arelbo.stages.evaluate import _record

    cfg = dataclasses.replace(ci_config, outdir=str(tmp_path))
    torch.set_num_threads(2)
    model_file = _fit_tiny(layout.model_dir(cfg.outdir, "mnist", "vae", 0), epochs=1)
    assert torch.load(model_file, weights_only=True)["threads"] == 2
    torch.set_num_threads(1)
    record = _record(cfg, "mnist", "vae", 0, "mse", 1.0, provenance=provenance(cfg, "mnist", torch.device("cpu")))
    assert record["threads"] == 1 and record["train_threads"] == 2
    row = tidy_from_records([record]).iloc[0]
    assert row["threads"] == 1 and row["train_threads"] == 2


def test_a_log_resumed_under_another_thread_count_says_both():
    from arelbo.core.provenance import mixed_provenance
    from arelbo.stages.train import threads_of

    assert threads_of([{"threads": "2"}, {"threads": "2"}]) == 2
    assert threads_of([{"threads": 2}, {"threads": 1}]) == "2,1"
    assert threads_of([{"epoch": 1}]) is None  # a log from before the column

    import pandas as pd

    notes = mixed_provenance(pd.DataFrame({"train_threads": [1, 2, 2]}))
    assert any("thread counts (1, 2)" in note for note in notes)
    assert not mixed_provenance(pd.DataFrame({"train_threads": [2, 2]}))


# ---------------------------------------------------------------------------- the job's own command


@pytest.mark.slow
@pytest.mark.e2e  # arelbo train run, SIGTERMed and rerun in processes (make test-fast leaves it out)
def test_sigterm_stops_arelbo_train_with_status_143_and_the_rerun_equals_an_uninterrupted_run(tmp_path, ci_config):
    overlay = _overlay(tmp_path, lr=1e-3, epochs=5, batch_size=64)
    settings = yaml.safe_load(overlay.read_text())
    # the paper's cadence: no periodic checkpoint is written before the signal
    settings["train"]["checkpoint"] = {"every_epochs": 10, "every_minutes": 10}
    settings["data"] = {"mnist": {"limit": {"train": 1024, "val": 64}}}  # 16 steps an epoch
    overlay.write_text(yaml.safe_dump(settings))
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    subprocess.run(_train_cmd(overlay, straight), cwd=REPO, check=True, env=env, capture_output=True)

    proc = subprocess.Popen(
        _train_cmd(overlay, stopped), cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if (stopped / LOG).is_file() and len((stopped / LOG).read_text().splitlines()) >= 1 + 2:
            break  # epochs 1 and 2 are done (the log is written atomically after each)
        time.sleep(0.02)
    assert proc.poll() is None, "the run finished before the signal; make it longer"
    assert not (stopped / CHECKPOINT).exists()  # nothing periodic yet: all that survives is the stop's
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, stderr[-2000:]
    assert "SIGTERM received" in stderr
    assert torch.load(stopped / CHECKPOINT, weights_only=True)["epoch"] >= 2
    assert not (stopped / MODEL).exists()
    subprocess.run(_train_cmd(overlay, stopped), cwd=REPO, check=True, env=env, capture_output=True)

    assert (stopped / MODEL).read_bytes() == (straight / MODEL).read_bytes()
    assert _log_without_seconds(stopped / LOG) == _log_without_seconds(straight / LOG)
    assert len(_log_without_seconds(straight / LOG)) == 5
