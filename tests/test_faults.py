"""Fault injection: bad input and hostile conditions end in the correct result or one clear message
naming what is wrong and how to fix it — never in an output that looks finished but is not.

(Further cases live beside the code they exercise: re-runs and resume checks in test_train.py,
corrupt raw MNIST and partial caches in test_data.py, truncated Inception weights in test_fid.py,
a SIGKILLed training in test_train.py, CelebA missing in test_paper_config.py.)
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from arelbo.core.config import ConfigError, load_config

REPO = Path(__file__).resolve().parents[1]


def arelbo(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "arelbo", *args], cwd=REPO, capture_output=True, text=True, timeout=timeout
    )


def snakemake(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "snakemake", *args], cwd=REPO, capture_output=True, text=True, timeout=timeout
    )


def assert_clear_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stderr[-3000:])
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    for fragment in fragments:
        assert fragment in result.stderr, (fragment, result.stderr[-3000:])


@contextlib.contextmanager
def small_tmpfs(path: Path, size: str, read_only: bool = False):
    """A tiny file system (root only); skips the test with the reason where it cannot be mounted."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.strip()}")
    try:
        if read_only:
            subprocess.run(["mount", "-o", "remount,ro", str(path)], check=True)
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


# ---------------------------------------------------------------------------- input caught up front


def test_outdir_spellings_are_one_outdir():
    for spelling in ("./results/x", "results/x/", "results//x", "results/./x/"):
        assert load_config(check_folders=False, overrides={"outdir": spelling}).outdir == "results/x"
    assert load_config(check_folders=False, overrides={"resources": "./resources/"}).resources == "resources"


def test_a_dotted_outdir_plans_the_same_dag(tmp_path):
    import shutil

    plans = {}
    try:
        for spelling in ("results/faults-dot", "./results/faults-dot/"):
            result = snakemake(
                "-n",
                "--cores",
                "2",
                "--configfile",
                "config/ci.yaml",
                "--config",
                f"outdir={spelling}",
                f"logdir={tmp_path}/logs",
            )
            assert result.returncode == 0, result.stderr[-3000:]
            plans[spelling] = result.stdout.split("Job stats:")[1].split("total")[0]
    finally:
        shutil.rmtree(REPO / "results" / "faults-dot", ignore_errors=True)
    assert plans["results/faults-dot"] == plans["./results/faults-dot/"]
    assert "train " in plans["results/faults-dot"]


def test_a_config_without_mnist_leaves_section3_out(tmp_path):
    result = snakemake(
        "-n",
        "--cores",
        "2",
        "--configfile",
        "config/ci.yaml",
        "--config",
        "datasets=[celeba]",
        f"outdir={tmp_path}/out",
        f"logdir={tmp_path}/logs",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    counts = result.stdout.split("Job stats:")[1].split("total")[0]
    assert "section3_train" not in counts and "table " in counts
    assert "Section 3" in result.stdout + result.stderr and "MNIST study" in result.stdout + result.stderr


@pytest.mark.parametrize("count", [0, 1])
def test_fid_with_fewer_than_two_samples_is_refused_before_any_work(count):
    with pytest.raises(ConfigError, match="fid.n_samples"):
        load_config("config/ci.yaml", check_folders=False, overrides={"fid": {"n_samples": count}})
    with pytest.raises(ConfigError, match="fid.reference_count"):
        load_config("config/ci.yaml", check_folders=False, overrides={"fid": {"reference_count": 1}})


def test_a_last_minibatch_of_one_image_is_refused_before_any_work():
    with pytest.raises(ConfigError, match=r"last minibatch\s+of 1 image.*data.mnist.limit.train"):
        load_config(
            "config/ci.yaml", check_folders=False, overrides={"data": {"mnist": {"limit": {"train": 129}}}}
        )  # 129 = 2·64 + 1
    load_config("config/ci.yaml", check_folders=False, overrides={"data": {"mnist": {"limit": {"train": 130}}}})


def test_an_unknown_model_on_the_command_line_is_a_clear_error(tmp_path):
    result = arelbo(
        "train", "--config", "config/ci.yaml", "--dataset", "mnist", "--model", "vea", "--out", str(tmp_path / "out")
    )
    assert_clear_error(result, "unknown model 'vea'", "iso_i_arelbo")
    assert not (tmp_path / "out").exists()


def test_a_bad_grid_point_is_a_clear_error(tmp_path):
    result = arelbo(
        "section3-train",
        "--config",
        "config/ci.yaml",
        "--point",
        "table9/log10_sigma_x2=-0.5",
        "--out",
        str(tmp_path / "out"),
    )
    assert_clear_error(result, "not a Section 3 grid point")


def test_a_yaml_syntax_error_names_file_and_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: mine\nfid:\n  n_samples: [10\nseeds: [0]\n")
    result = arelbo("config", "--config", str(bad))
    assert_clear_error(result, f"{bad}:", "YAML syntax error")
    line = int(result.stderr.split(f"{bad}:")[1].split(":")[0])
    assert line in (3, 4)  # where the unclosed bracket is, or where YAML notices it


# ---------------------------------------------------------------------------- hostile file systems


@pytest.mark.slow
def test_a_full_output_disk_is_a_clear_error_and_leaves_nothing_finished_looking(tmp_path, ci_config):
    with small_tmpfs(tmp_path / "full", "4m") as out:
        result = arelbo(
            "train",
            "--config",
            "config/ci.yaml",
            "--dataset",
            "mnist",
            "--model",
            "vae",
            "--out",
            str(out / "model"),
            "--no-progress",
            "--threads",
            "1",
        )
        assert_clear_error(result, "no space left on the device", "Free some space")
        left = sorted(p.name for p in (out / "model").iterdir())
        assert left == [], left  # no model.pt, no checkpoint, no stray temporary


@pytest.mark.slow
def test_a_read_only_output_folder_is_refused_before_training(tmp_path, ci_config):
    with small_tmpfs(tmp_path / "ro", "4m", read_only=True) as out:
        result = arelbo(
            "train",
            "--config",
            "config/ci.yaml",
            "--dataset",
            "mnist",
            "--model",
            "vae",
            "--out",
            str(out),
            "--no-progress",
            "--threads",
            "1",
        )
        assert_clear_error(result, "cannot write", "read-only")
        assert "epoch 1" not in result.stderr  # refused before any epoch was trained


def test_out_of_space_from_torch_save_is_recognised(tmp_path, monkeypatch):
    """torch's zip writer reports a full disk as RuntimeError('unexpected pos …'), not ENOSPC."""
    import shutil

    import torch

    from arelbo.core.runtime import OutOfSpace, atomic_path

    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage._replace(free=1 << 20))
    with pytest.raises(OutOfSpace, match="no space left"):
        with atomic_path(tmp_path / "x.pt") as tmp:
            torch.save({"a": 1}, tmp)
            raise RuntimeError(
                "[enforce fail at inline_container.cc:783] . PytorchStreamWriter failed "
                "writing file data/0: file write failed / unexpected pos 64 vs 0"
            )
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(RuntimeError, match="unrelated"):  # other errors are not relabelled
        with atomic_path(tmp_path / "y.pt"):
            raise RuntimeError("unrelated")


# ---------------------------------------------------------------------------- two invocations, one outdir


def _wait_for(predicate, timeout: float, what: str) -> None:
    import time

    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.slow
@pytest.mark.e2e
def test_a_second_config_on_the_same_outdir_cannot_change_a_running_workflow(tmp_path, ci_config):
    """Run A trains and measures an MSE, then keeps running; meanwhile config B (same outdir, another
    test-split limit) is dry-run and then really started (refused: A holds the lock). A's outputs are made with
    A's settings, A's user-facing config copy is A's, B wrote nothing, A sees nothing left to do, and B
    sees exactly the jobs its settings change."""
    import json

    out = tmp_path / "results"
    # A must still hold the lock when B starts, and B's dry run must not meet A's half-written files
    # (Snakemake refuses a DAG with incomplete files). So A does its training and MSE first
    # (--prioritize) and then a long job outside B's DAG (a Section 3 group of 10 epochs, ~30 s on 2 cores
    # against the ~10 s that B's dry run and start take); B is dry-run and started once A's MSE is written,
    # while A trains that group. Too short a group fails below ("A finished before B started"), never passes.
    slow = tmp_path / "slow.yaml"
    slow.write_text(yaml.safe_dump({"section3": {"train": {"lr": 1.0e-3, "epochs": 10, "batch_size": 64}}}))
    other = tmp_path / "B.yaml"
    other.write_text(yaml.safe_dump({"name": "ci-b", "data": {"mnist": {"limit": {"test": 64}}}}))
    common = ["--config", f"outdir={out}", f"logdir={tmp_path}/logs"]
    target = f"{out}/metrics/mnist/vae/seed0/mse.json"
    long_job = f"{out}/sweeps/table5/log10_sigma_z2=-1.0/seed0/model.pt"
    a_cmd = [
        sys.executable,
        "-m",
        "snakemake",
        target,
        f"{out}/config.yaml",
        long_job,
        "--cores",
        "1",
        "--prioritize",
        target,
        "--configfile",
        "config/ci.yaml",
        str(slow),
        *common,
    ]
    run_a = subprocess.Popen(a_cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _wait_for(lambda: Path(target).is_file(), 300, "A's MSE")
        dry_b = snakemake(
            "-n", target, "--cores", "1", "--configfile", "config/ci.yaml", str(slow), str(other), *common
        )
        assert dry_b.returncode == 0, (dry_b.stdout[-2000:], dry_b.stderr[-2000:])
        real_b = snakemake(target, "--cores", "1", "--configfile", "config/ci.yaml", str(slow), str(other), *common)
        if run_a.poll() is not None:
            raise AssertionError(
                "A finished before B started: the lock was not tested\n" + run_a.communicate()[0][-4000:]
            )
        assert real_b.returncode != 0 and "lock" in (real_b.stdout + real_b.stderr).lower()
    finally:
        log_a, _ = run_a.communicate(timeout=900)
    assert run_a.returncode == 0, log_a[-3000:]
    (record,) = json.loads(Path(target).read_text())
    assert record["config"] == "ci" and record["n_images"] == 128  # A's settings, not B's (64)
    assert (out / "config.yaml").read_text().startswith("name: ci\n")
    # A's resolved config only: B's dry run and its refused start wrote nothing (it is written when a run
    # starts, after the lock)
    written = list((out / "configs").glob("*.yaml"))
    assert len(written) == 1 and written[0].read_text().startswith("name: ci\n"), written
    again_a = snakemake("-n", target, "--cores", "1", "--configfile", "config/ci.yaml", str(slow), *common)
    assert "Nothing to be done" in again_a.stdout + again_a.stderr, again_a.stdout[-2000:]
    again_b = snakemake("-n", target, "--cores", "1", "--configfile", "config/ci.yaml", str(slow), str(other), *common)
    jobs_b = again_b.stdout.split("Job stats:")[1].split("total")[0]
    assert "metric_mse" in jobs_b and "train " not in jobs_b  # B re-runs the MSE only


# ---------------------------------------------------------------------------- SIGKILL, then re-run


def _kill_at(cmd: list[str], seconds: float) -> bool:
    """Start cmd, SIGKILL it after `seconds`; True if it was still running (really interrupted)."""
    import signal
    import time

    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(seconds)
    alive = proc.poll() is None
    if alive:
        proc.send_signal(signal.SIGKILL)
    proc.wait()
    return alive


def _strays(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob(".*") if p.is_file())  # atomic_path's temporaries


def _timed_run(cmd: list[str]) -> float:
    """Runs cmd to the end (it must succeed); its wall time in seconds."""
    import time

    started = time.monotonic()
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    return time.monotonic() - started


def _kill_then_rerun(cmd: list[str], expected: dict[Path, bytes], straight_seconds: float, seed: int) -> None:
    """Three runs of cmd SIGKILLed at seeded points between 15 % and 85 % of an uninterrupted run's wall
    time (start-up included: imports, weights loading, the work itself), then one run to the end.

    After each kill an output is either absent or complete: byte for byte what the uninterrupted run
    wrote (`expected`). A kill that lands after the last output is written, while the interpreter
    shuts down, leaves complete outputs; at least one kill must land before them. Kill times scale with
    the machine: fixed seconds landed after the end once start-up got faster."""
    import random

    rng = random.Random(seed)
    interrupted = 0
    folder = next(iter(expected)).parent
    for seconds in [rng.uniform(0.15, 0.85) * straight_seconds for _ in range(3)]:
        if _kill_at(cmd, seconds):
            present = [path for path in expected if path.exists()]
            for path in present:
                assert path.read_bytes() == expected[path], f"a killed job left an unfinished {path.name} behind"
            assert not _strays(folder), _strays(folder)
            interrupted += not present
            for path in present:  # the next try starts from nothing again
                path.unlink()
    assert interrupted, (
        f"every kill came after the job's outputs were written (uninterrupted: {straight_seconds:.1f} s)"
    )
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]


@pytest.mark.slow
@pytest.mark.e2e
def test_a_killed_fid_job_reruns_to_the_uninterrupted_value(tmp_path, ci_config):
    import json

    import numpy as np

    from arelbo.core import layout
    from arelbo.metrics.fid import reference_stats
    from arelbo.stages.data import load_split

    cfg = ci_config
    count = cfg.fid_reference_count("mnist")
    reference_stats(
        layout.fid_reference(cfg.resources, "mnist", "test", count),
        lambda: load_split("mnist", "test", cfg, limit=count),
        dataset="mnist",
        split="test",
        count=count,
        weights_path=layout.inception_weights(cfg.resources),
        progress=False,
    )
    samples = tmp_path / "samples.npz"
    np.savez(samples, images=load_split("mnist", "train", cfg)[: cfg.fid.n_samples].numpy())

    def cmd(out):
        return [
            sys.executable,
            "-m",
            "arelbo",
            "metric",
            "fid_prior",
            "--config",
            "config/ci.yaml",
            "--dataset",
            "mnist",
            "--model",
            "vae",
            "--samples",
            str(samples),
            "--out",
            str(out),
        ]

    straight = tmp_path / "straight" / "fid_prior.json"
    seconds = _timed_run(cmd(straight))
    killed = tmp_path / "killed" / "fid_prior.json"
    _kill_then_rerun(cmd(killed), {killed: straight.read_bytes()}, seconds, seed=12)
    assert json.loads(killed.read_text()) == json.loads(straight.read_text())  # FID and KID records


@pytest.mark.slow
@pytest.mark.e2e
def test_a_killed_table_job_reruns_to_identical_files(tmp_path):
    import json

    records = []
    for i, model in enumerate(["vae", "ae", "iso_i_arelbo"]):
        records.append(
            {
                "table": 3,
                "dataset": "mnist",
                "model": model,
                "seed": 0,
                "metric": "mse",
                "value": 10.0 + i,
                "config": "ci",
                "commit": "x",
            }
        )
        if model != "ae":
            records.append(
                {
                    "table": 3,
                    "dataset": "mnist",
                    "model": model,
                    "seed": 0,
                    "metric": "fid_prior",
                    "value": 50.0 - i,
                    "config": "ci",
                    "commit": "x",
                }
            )
    files = []
    for i, record in enumerate(records):
        files.append(tmp_path / f"r{i}.json")
        files[-1].write_text(json.dumps(record))

    def cmd(outdir):
        return [
            sys.executable,
            "-m",
            "arelbo",
            "table",
            "--config",
            "config/ci.yaml",
            "--table",
            "3",
            "--outdir",
            str(outdir),
            *map(str, files),
        ]

    seconds = _timed_run(cmd(tmp_path / "straight"))
    names = ["table3.tex", "tables/table3_tidy.csv", "tables/table3_paper.csv", "tables/table3_vs_paper.csv"]
    expected = {tmp_path / "killed" / name: (tmp_path / "straight" / name).read_bytes() for name in names}
    _kill_then_rerun(cmd(tmp_path / "killed"), expected, seconds, seed=3)
    for name in names:
        assert (tmp_path / "killed" / name).read_bytes() == (tmp_path / "straight" / name).read_bytes(), name
    assert not _strays(tmp_path / "killed")


def test_a_write_over_the_file_size_limit_names_the_file_the_error_and_the_fix(tmp_path):
    """A job whose output hits a file-size limit (ulimit -f) ends in one line naming the file, the
    limit and the fix, with a non-zero exit; nothing partial is left beside it."""
    import resource

    from test_train import REPO, _overlay, _train_cmd

    overlay = _overlay(tmp_path, lr=1e-3, epochs=1, batch_size=64)
    settings = yaml.safe_load(overlay.read_text())
    settings["data"] = {"mnist": {"limit": {"train": 128, "val": 64}}}
    overlay.write_text(yaml.safe_dump(settings))
    out = tmp_path / "out"

    def limit_file_size():
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))

    result = subprocess.run(
        _train_cmd(overlay, out), cwd=REPO, capture_output=True, text=True, preexec_fn=limit_file_size, check=False
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("arelbo train: error: cannot write ") and "model.pt: file too large" in last, last
    assert "65536 bytes (ulimit -f)" in last and "lift the file-size limit" in last
    assert not (out / "model.pt").exists() and not [p for p in out.iterdir() if p.name.startswith(".model.pt.")]
