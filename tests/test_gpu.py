"""GPU checks (`pytest -m gpu`): run where CUDA is usable, skipped elsewhere — never needed by CI.

They are the CUDA halves of CPU tests: a training interrupted on the GPU resumes there, a checkpoint
moves between the GPU and the CPU in both directions, and the full-rank Fréchet distance gives the
same number on the GPU as on the CPU.
"""
from __future__ import annotations

import pytest
import torch

from test_train import CHECKPOINT, _fit_tiny, _Interrupt

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a usable CUDA GPU")]


def _weights(path):
    return torch.load(path, map_location="cpu", weights_only=False)["state_dict"]


def test_interrupted_cuda_training_resumes_on_cuda_to_the_same_weights(tmp_path):
    straight = _weights(_fit_tiny(tmp_path / "straight", device="cuda"))
    with pytest.raises(_Interrupt):
        _fit_tiny(tmp_path / "resumed", stop_at_epoch=3, device="cuda")
    ckpt = torch.load(tmp_path / "resumed" / CHECKPOINT, weights_only=False)  # GPU-tagged tensors
    assert ckpt["epoch"] == 2 and ckpt["net"]["enc.weight"].is_cuda and "cuda_device" in ckpt["rng"]
    resumed = _weights(_fit_tiny(tmp_path / "resumed", device="cuda"))
    for name, tensor in straight.items():
        torch.testing.assert_close(resumed[name], tensor, rtol=0, atol=1e-6)


@pytest.mark.parametrize("first,second", [("cuda", "cpu"), ("cpu", "cuda")])
def test_a_checkpoint_moves_between_devices(tmp_path, first, second):
    with pytest.raises(_Interrupt):
        _fit_tiny(tmp_path, stop_at_epoch=3, device=first)
    model = _fit_tiny(tmp_path, device=second)   # resumes after epoch 2 on the other device
    weights = _weights(model)
    assert all(torch.isfinite(t).all() for t in weights.values())
    log = (tmp_path / "train_log.csv").read_text().splitlines()
    assert len(log) == 1 + 4


def test_full_rank_frechet_distance_on_cuda_equals_the_cpu_route():
    import numpy as np

    from arelbo.metrics.fid import feature_stats, frechet_distance_to_features

    rng = np.random.default_rng(0)
    dim = 2048
    mixing = rng.normal(size=(dim, dim)) / np.sqrt(dim)
    gen = rng.normal(size=(dim + 1, dim)) @ mixing
    ref = dict(zip(("mu", "sigma"), feature_stats(rng.normal(size=(3000, dim)) @ (mixing * 0.9) + 0.1)))
    on_cpu = frechet_distance_to_features(gen, ref, device="cpu")
    on_cuda = frechet_distance_to_features(gen, ref, device="cuda")
    assert on_cuda == pytest.approx(on_cpu, rel=1e-9)
