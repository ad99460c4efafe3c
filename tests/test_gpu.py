"""GPU checks (`pytest -m gpu`): run where CUDA is usable, skipped elsewhere — never needed by CI.

They are the CUDA halves of CPU tests, with the same assertions: a training interrupted on a device
resumes there (parametrised: its CPU half runs in every suite), a checkpoint moves between the GPU and
the CPU in both directions (CPU twin: tests/test_train.py's checkpoint rewritten as if saved on CUDA),
the full-rank Fréchet distance gives the CPU route's number (CPU twin: tests/test_fid.py against
pytorch-fid), batched second stages and Section 3 groups equal their one-by-one fits (CPU twins in
tests/test_estimators.py and tests/test_section3.py). Tests that compare two computations pin strict
FP32 and cuDNN's choice of kernels (`strict_fp32`) and restore the flags after them.
"""

from __future__ import annotations

import pytest
import torch
from test_train import CHECKPOINT, _fit_tiny, _Interrupt

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a usable CUDA GPU")
ON_CUDA = [pytest.mark.gpu, CUDA]
DEVICES = [pytest.param("cpu", id="cpu"), pytest.param("cuda", id="cuda", marks=ON_CUDA)]


def _weights(path):
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


@pytest.fixture
def strict_fp32(monkeypatch):
    """FP32 that is FP32 (no TF32 in cuBLAS or cuDNN) and no autotuner, for this test only: two paths
    compared at float tolerance must not differ by TF32's 10-bit mantissa or by kernels the autotuner
    picked per shape."""
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)


def _tensors(tree):
    from torch.utils._pytree import tree_leaves

    return [leaf for leaf in tree_leaves(tree) if torch.is_tensor(leaf)]


@pytest.mark.parametrize("device", DEVICES)
def test_an_interrupted_training_resumes_on_its_device_to_the_same_weights(tmp_path, device, strict_fp32):
    """The checkpoint is written from a CPU snapshot whatever the device (it loads on any machine); it
    carries the CUDA generator's state only when the training ran on CUDA; the resumed run ends with the
    uninterrupted run's weights (bit for bit on the CPU; on CUDA to 1e-6, the most a reduction order
    cuBLAS may pick per call moves these few-hundred-element sums in float32)."""
    from arelbo.stages.train import load_checkpoint

    straight = _weights(_fit_tiny(tmp_path / "straight", device=device))
    with pytest.raises(_Interrupt):
        _fit_tiny(tmp_path / "resumed", stop_at_epoch=3, device=device)
    ckpt = load_checkpoint(tmp_path / "resumed" / CHECKPOINT)
    assert ckpt["epoch"] == 2
    assert all(
        t.device.type == "cpu" for t in _tensors(torch.load(tmp_path / "resumed" / CHECKPOINT, weights_only=False))
    )
    assert ("cuda_device" in ckpt["rng"]) == (device == "cuda")
    resumed = _weights(_fit_tiny(tmp_path / "resumed", device=device))
    for name, tensor in straight.items():
        torch.testing.assert_close(resumed[name], tensor, rtol=0, atol=0 if device == "cpu" else 1e-6)


@pytest.mark.parametrize("first,second", [("cuda", "cpu"), ("cpu", "cuda")])
@pytest.mark.gpu
@CUDA
def test_a_checkpoint_moves_between_devices(tmp_path, first, second):
    with pytest.raises(_Interrupt):
        _fit_tiny(tmp_path, stop_at_epoch=3, device=first)
    model = _fit_tiny(tmp_path, device=second)  # resumes after epoch 2 on the other device
    weights = _weights(model)
    assert all(torch.isfinite(t).all() for t in weights.values())
    log = (tmp_path / "train_log.csv").read_text().splitlines()
    assert len(log) == 1 + 4


@pytest.mark.gpu
@CUDA
def test_full_rank_frechet_distance_on_cuda_equals_the_cpu_route():
    """Both routes in float64, through different eigensolvers (cuSOLVER, LAPACK). Each is backward
    stable: the eigenvalues of the 2048×2048 product M come out within δ ≈ D·ε·‖M‖ ≈ 5e-12 (‖M‖ ≈ 20
    here). √ turns that into up to √δ ≈ 2e-6 at an eigenvalue below δ and δ / (2√λ) above; with 2,049
    samples in 2,048 dimensions M has eigenvalues down to ~1e-16 (185 below 1e-5, measured on the CPU:
    the Marchenko–Pastur edge is at 0 for N ≈ D), so 2·tr √M may move by ~1e-4 in all, against a
    distance of 515 — rel ~2e-7. Hence rel 1e-6; float64's 1e-15 does not survive √ near zero, and
    the 1e-9 of before held only by luck."""
    import numpy as np

    from arelbo.metrics.fid import feature_stats, frechet_distance_to_features

    rng = np.random.default_rng(0)
    dim = 2048
    mixing = rng.normal(size=(dim, dim)) / np.sqrt(dim)
    gen = rng.normal(size=(dim + 1, dim)) @ mixing
    ref = dict(zip(("mu", "sigma"), feature_stats(rng.normal(size=(3000, dim)) @ (mixing * 0.9) + 0.1)))
    on_cpu = frechet_distance_to_features(gen, ref, device="cpu")
    on_cuda = frechet_distance_to_features(gen, ref, device="cuda")
    assert on_cuda == pytest.approx(on_cpu, rel=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("model_id", ["iso_i_arelbo", "vae"])
def test_bf16_channels_last_celeba_step_is_finite_and_close_to_fp32(model_id, device, strict_fp32, monkeypatch):
    """The CelebA net as the trainer runs it on CUDA (channels_last, cuDNN autotuner): the bf16-trunk
    loss is within one bf16 rounding of strict FP32's (no TF32: `strict_fp32`) and its gradient points
    the same way. The autotuner is on for this test only (monkeypatch restores it). On the CPU, the
    same assertions with CPU autocast on 4 images (bf16 is emulated there: ~10 s a model)."""
    from arelbo.models.nets import build_net
    from arelbo.models.objectives import loss_and_terms

    monkeypatch.setattr(torch.backends.cudnn, "benchmark", True)
    torch.manual_seed(0)
    net = build_net(model_id, "celeba").to(device).to(memory_format=torch.channels_last).train()
    x = torch.rand(16 if device == "cuda" else 4, 3, 64, 64, device=device)
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


@pytest.mark.gpu
@CUDA
def test_batched_second_stages_on_cuda_equal_separate_fits(strict_fp32):
    """second_stage.batched on the GPU: K vectorised fits equal K fits of one there, to the CPU twin's
    tolerance (tests/test_estimators.py), in strict FP32."""
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
            torch.testing.assert_close(batched[k].net.state_dict()[key], value, rtol=1e-4, atol=1e-5)


@pytest.mark.gpu
@CUDA
def test_a_batched_section3_group_on_cuda_equals_its_points_one_by_one(tmp_path, mnist_raw_dir, strict_fp32):
    """The CPU test's assertion (tests/test_section3.py, `assert_batched_equals_single`: sign flips of
    near-zero gradients under Adam allowed, bounded by the steps taken), in strict FP32."""
    from test_section3 import _GROUP_POINTS, _tiny_study_config, assert_batched_equals_single

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
        assert_batched_equals_single(cfg, one, many, len(points))


@pytest.mark.parametrize("device", DEVICES)
def test_the_mse_jobs_sample_leaves_no_trace_on_the_global_generators(tmp_path, ci_config, device):
    """evaluate.mse seeds the global generators for its one reparameterised sample (Iso-I AR-ELBO's σx²
    term draws it) and restores them afterwards: the CPU's and, on CUDA, the device's too. What is left
    on them is what loading the model does (building the network draws its initial weights)."""
    from dataclasses import asdict

    from arelbo.core.config import load_config
    from arelbo.core.runtime import pick_device, seed_everything
    from arelbo.models.nets import build_net
    from arelbo.stages import evaluate
    from arelbo.stages.train import load_trained

    cfg = load_config("config/ci.yaml", overrides={"device": device})
    seed_everything(0)
    net = build_net("iso_i_arelbo", "mnist")
    torch.save({"state_dict": net.state_dict(), "net_config": asdict(net.config)}, tmp_path / "model.pt")

    def states():
        return [torch.get_rng_state()] + ([torch.cuda.get_rng_state()] if device == "cuda" else [])

    torch.manual_seed(123)
    load_trained(tmp_path / "model.pt", pick_device(device))
    expected = states()
    torch.manual_seed(123)
    evaluate.mse(cfg, "mnist", "iso_i_arelbo", tmp_path / "model.pt", 0, tmp_path / "mse.json")
    assert all(torch.equal(a, b) for a, b in zip(states(), expected))


@pytest.mark.gpu
@CUDA
def test_second_stage_noise_from_a_cpu_generator_serves_latents_on_cuda(strict_fp32):
    """CUDA twin of tests/test_estimators.py's meta-device test: the same loss as on the CPU."""
    from arelbo.models.estimators import SecondStageVAE, second_stage_loss

    torch.manual_seed(0)
    net, u = SecondStageVAE(4, 8, 2), torch.randn(16, 4)
    on_cpu, _ = second_stage_loss(net, u, torch.Generator().manual_seed(5))
    on_cuda, _ = second_stage_loss(net.cuda(), u.cuda(), torch.Generator().manual_seed(5))
    assert float(on_cuda) == pytest.approx(float(on_cpu), rel=1e-5)
