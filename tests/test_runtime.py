"""Which device a job runs on is never a guess: device choice, its errors and warnings, and the
device record every job logs and every metric/criteria record carries."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
import yaml

from arelbo.core import runtime
from arelbo.core.runtime import DeviceError, describe_device, device_info, pick_device

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    runtime._WARNED.clear()


def test_explicit_cuda_without_a_gpu_is_a_clear_error(no_cuda, monkeypatch):
    monkeypatch.setattr(runtime, "nvidia_driver_version", lambda: None)
    with pytest.raises(DeviceError, match="no NVIDIA GPU or driver.*device: auto"):
        pick_device("cuda")
    with pytest.raises(DeviceError, match="not a device torch knows"):
        pick_device("gpu0")


def test_explicit_cuda_with_a_gpu_torch_cannot_use_names_both_versions(no_cuda, monkeypatch):
    monkeypatch.setattr(runtime, "nvidia_driver_version", lambda: "470.57.02")
    with pytest.raises(DeviceError) as info:
        pick_device("cuda:0")
    message = str(info.value)
    assert "470.57.02" in message and torch.__version__ in message and "driver" in message


def test_auto_falls_back_to_cpu_loudly_when_a_gpu_is_present_but_unusable(no_cuda, monkeypatch, caplog):
    monkeypatch.setattr(runtime, "nvidia_driver_version", lambda: "470.57.02")
    with pytest.warns(RuntimeWarning, match="470.57.02"):
        assert pick_device("auto") == torch.device("cpu")
    assert any("falls back to the CPU" in r.getMessage() for r in caplog.records)


def test_auto_without_any_gpu_is_quietly_the_cpu(no_cuda, monkeypatch):
    monkeypatch.setattr(runtime, "nvidia_driver_version", lambda: None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert pick_device("auto") == torch.device("cpu")
        assert pick_device("cpu") == torch.device("cpu")


def test_driver_version_is_read_from_the_kernel_module_line(tmp_path, monkeypatch):
    text = (
        "NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.54.15  Tue Mar  5 22:23:56 UTC 2024\n"
        "GCC version:  gcc version 12.2.0 (Debian 12.2.0-14)\n"
    )
    real_read = Path.read_text
    monkeypatch.setattr(
        Path,
        "read_text",
        lambda self, *a, **k: text if str(self) == "/proc/driver/nvidia/version" else real_read(self, *a, **k),
    )
    assert runtime.nvidia_driver_version() == "550.54.15"


def test_device_info_names_device_versions_and_host():
    info = device_info(torch.device("cpu"))
    assert info["device"] == "cpu" and info["torch"] == torch.__version__ and "cuda" in info
    assert info["device_name"] and info["host"] and info["threads"] >= 1
    assert "cpu" in describe_device(info) and torch.__version__ in describe_device(info)


def test_a_job_with_device_cuda_and_no_gpu_fails_before_any_work(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a usable GPU")
    overlay = tmp_path / "cuda.yaml"
    overlay.write_text(yaml.safe_dump({"device": "cuda"}))
    out = tmp_path / "out"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "arelbo",
            "train",
            "--config",
            "config/ci.yaml",
            "--config",
            str(overlay),
            "--dataset",
            "mnist",
            "--model",
            "vae",
            "--out",
            str(out),
            "--no-progress",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert "error: device 'cuda' was requested but CUDA is not usable" in result.stderr
    assert "Traceback" not in result.stderr and not out.exists()  # nothing was started


def test_a_job_logs_the_device_it_runs_on(tmp_path, ci_config):
    # `arelbo fit` of the prior is the cheapest job that picks a device
    import numpy as np

    latents = tmp_path / "latents.npz"
    np.savez(latents, train_mu=np.zeros((8, 16), np.float32), test_mu=np.zeros((4, 16), np.float32))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "arelbo",
            "fit",
            "--config",
            "config/ci.yaml",
            "--estimator",
            "prior",
            "--latents",
            str(latents),
            "--out",
            str(tmp_path / "prior.pkl"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    line = next(text for text in result.stderr.splitlines() if "device:" in text)
    assert "cpu" in line and f"torch {torch.__version__}" in line and "CUDA" in line


def test_cuda_determinism_switch_sets_what_pytorch_documents(monkeypatch):
    from arelbo.core.runtime import configure_cuda_determinism

    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    before = (
        torch.are_deterministic_algorithms_enabled(),
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
        torch.backends.cudnn.allow_tf32,
        torch.backends.cuda.matmul.allow_tf32,
    )
    try:
        configure_cuda_determinism(False)
        assert torch.are_deterministic_algorithms_enabled() == before[0]  # false: PyTorch's defaults
        configure_cuda_determinism(True)
        assert torch.are_deterministic_algorithms_enabled() and torch.backends.cudnn.deterministic
        assert not torch.backends.cudnn.benchmark and not torch.backends.cudnn.allow_tf32
        assert not torch.backends.cuda.matmul.allow_tf32
        import os

        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    finally:
        torch.use_deterministic_algorithms(before[0])
        (
            torch.backends.cudnn.deterministic,
            torch.backends.cudnn.benchmark,
            torch.backends.cudnn.allow_tf32,
            torch.backends.cuda.matmul.allow_tf32,
        ) = before[1:]
