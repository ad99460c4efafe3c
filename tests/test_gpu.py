"""GPU checks (`pytest -m gpu`): run where CUDA is usable, skipped elsewhere — never needed by CI.

They are the CUDA halves of CPU tests: a training interrupted on the GPU resumes there, a checkpoint
moves between the GPU and the CPU in both directions, and the full-rank Fréchet distance gives the
same number on the GPU as on the CPU.
"""

from __future__ import annotations

import pytest
import torch
from test_train import CHECKPOINT, _fit_tiny, _Interrupt

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a usable CUDA GPU")]


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
    model = _fit_tiny(tmp_path, device=second)  # resumes after epoch 2 on the other device
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


@pytest.mark.parametrize("model_id", ["iso_i_arelbo", "vae"])
def test_bf16_channels_last_celeba_step_is_finite_and_close_to_fp32(model_id):
    """The CelebA net on CUDA as the trainer runs it (channels_last, cuDNN autotuner): the bf16-trunk
    loss is within one bf16 rounding of FP32's and its gradient points the same way."""
    from arelbo.models.nets import build_net
    from arelbo.models.objectives import loss_and_terms

    torch.backends.cudnn.benchmark = True
    torch.manual_seed(0)
    net = build_net(model_id, "celeba").cuda().to(memory_format=torch.channels_last).train()
    x = torch.rand(16, 3, 64, 64, device="cuda")
    results = {}
    for dtype in (None, torch.bfloat16):
        net.trunk_dtype = dtype
        net.zero_grad()
        torch.manual_seed(1)
        loss, _ = loss_and_terms(model_id, "celeba", net, x, sample=False)
        loss.backward()
        results[dtype] = (loss.detach(), torch.cat([p.grad.flatten() for p in net.parameters()]))
    (loss32, grad32), (loss16, grad16) = results[None], results[torch.bfloat16]
    assert torch.isfinite(loss16) and loss16.dtype == torch.float32
    assert abs(loss16 - loss32) <= 2**-8 * abs(loss32)
    assert torch.nn.functional.cosine_similarity(grad16, grad32, dim=0) > 0.99


def test_batched_second_stages_on_cuda_equal_separate_fits():
    """second_stage.batched on the GPU: K vectorised fits equal K fits of one there (float tolerance)."""
    from dataclasses import replace

    from arelbo.core.config import paper_config
    from arelbo.models.estimators import fit_estimator, fit_second_stages

    g = torch.Generator().manual_seed(0)
    mu, logvar = torch.randn(300, 8, generator=g), torch.randn(300, 8, generator=g) * 0.3 - 1.0
    latents = [(mu, logvar), (2.0 * mu.flip(0), None), (mu + 1.0, logvar - 0.5)]
    tiny = replace(paper_config().second_stage.settings, epochs=3, lr=1e-3, lr_halve_every=2, hidden=32, depth=2)
    batched = fit_second_stages(
        latents, seed=1, settings=tiny, device=torch.device("cuda"), progress=False, names=["a", "b", "c"]
    )
    for k, (m, lv) in enumerate(latents):
        alone = fit_estimator("2ndvae", m, lv, seed=1, second_stage=tiny, device="cuda", progress=False)
        for key, value in alone.net.state_dict().items():
            torch.testing.assert_close(batched[k].net.state_dict()[key], value, rtol=1e-3, atol=1e-4)


def test_a_batched_section3_group_on_cuda_equals_its_points_one_by_one(tmp_path, mnist_raw_dir):
    from test_section3 import _GROUP_POINTS, _tiny_study_config

    from arelbo.core.config import load_config
    from arelbo.core.layout import section3_group_checkpoint
    from arelbo.stages.section3 import train_point, train_points_batched

    base = _tiny_study_config(tmp_path)
    cfg = load_config("config/ci.yaml", check_folders=False, overrides={**base.raw, "device": "cuda"})
    points = _GROUP_POINTS["table5"]
    single = [train_point(cfg, p, 3, tmp_path / "single" / p.id, progress=False) for p in points]
    batched = train_points_batched(
        cfg,
        points,
        3,
        [tmp_path / "batched" / p.id for p in points],
        section3_group_checkpoint(tmp_path / "batched", "table5", 3),
        progress=False,
    )
    for one, many in zip(single, batched):
        a, b = (_weights(f) for f in (one, many))
        for name, tensor in a.items():
            # as on the CPU (tests/test_section3.py): less than one Adam step (lr) apart anywhere
            assert float((b[name] - tensor).abs().max()) < cfg.section3.train.lr, name
