"""The precision policy (arelbo.core.precision) and its evidence (arelbo.models.precision): TF32
rounding against its closed form, the simulated convolution against convolutions of rounded
operands, which precision each model trains at on each device, the switches each job sets, and the
per-model measurement the registry's `tf32_safe` rests on."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from arelbo.core import registry
from arelbo.core.precision import (
    EVALUATION_PRECISION,
    PRECISIONS,
    arithmetic,
    current_precision,
    current_tf32_flags,
    set_arithmetic,
    training_precision,
)
from arelbo.models.precision import gradient_agreement, simulated_tf32, tf32_round


@pytest.fixture
def restored_switches(monkeypatch):
    """Whatever a test sets, the TF32 switches are as before afterwards (monkeypatch restores them)."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", torch.backends.cudnn.allow_tf32)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", torch.backends.cuda.matmul.allow_tf32)


# ---------------------------------------------------------------------------- TF32 rounding


def test_tf32_rounding_keeps_ten_mantissa_bits_rounding_to_nearest():
    ulp = 2.0**-10  # of TF32 at 1.0
    x = torch.tensor(
        [1.0, 1 + ulp, 1 + ulp / 4, 1 + 3 * ulp / 4, 1 + ulp / 2, -(1 + 3 * ulp / 4), 2 - ulp / 4, 0.0, 3.0e-39]
    )
    expected = torch.tensor([1.0, 1 + ulp, 1.0, 1 + ulp, 1 + ulp, -(1 + ulp), 2.0, 0.0, 3.0e-39])
    rounded = tf32_round(x)
    # ties away from zero (1 + ulp/2 → 1 + ulp); a carry into the exponent (2 − ulp/4 → 2); the
    # subnormal 3e-39 keeps its 10 leading mantissa bits
    assert torch.equal(rounded[:8], expected[:8])
    assert abs(float(rounded[8]) - 3.0e-39) <= 2.0**-10 * 3.0e-39 * 64
    special = torch.tensor([math.inf, -math.inf, math.nan])
    assert torch.equal(tf32_round(special)[:2], special[:2]) and torch.isnan(tf32_round(special)[2])
    values = torch.randn(100_000) * torch.logspace(-20, 20, 100_000)
    relative = ((tf32_round(values) - values) / values).abs()
    assert float(relative.max()) <= 2.0**-11  # half a TF32 ulp
    assert torch.equal(tf32_round(tf32_round(values)), tf32_round(values))  # idempotent
    with pytest.raises(TypeError, match="float32"):
        tf32_round(values.double())


@pytest.mark.parametrize("transposed", [False, True], ids=["conv2d", "conv_transpose2d"])
def test_simulated_tf32_convolution_is_the_convolution_of_rounded_operands(transposed):
    """Forward: the FP32 convolution of TF32-rounded input and weight. Backward: the input's and the
    weight's gradients are those of that convolution fed the TF32-rounded incoming gradient — the
    operands cuDNN's TF32 kernels round — and the bias's is the unrounded gradient's sum."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 8, 8, generator=g, requires_grad=True)
    w = torch.randn(3, 4, 3, 3, generator=g, requires_grad=True) if transposed else None
    w = w if transposed else torch.randn(4, 3, 3, 3, generator=g, requires_grad=True)
    b = torch.randn(4, generator=g, requires_grad=True)
    conv = F.conv_transpose2d if transposed else F.conv2d
    upstream = torch.randn(conv(x, w, b, padding=1).shape, generator=g)

    with simulated_tf32():
        out = (F.conv_transpose2d if transposed else F.conv2d)(x, w, b, padding=1)
    gx, gw, gb = torch.autograd.grad(out, (x, w, b), upstream)

    xr = tf32_round(x.detach()).requires_grad_()
    wr = tf32_round(w.detach()).requires_grad_()
    reference = conv(xr, wr, b, padding=1)
    rx, rw = torch.autograd.grad(reference, (xr, wr), tf32_round(upstream))
    assert torch.equal(out, reference)
    assert torch.equal(gx, rx) and torch.equal(gw, rw)
    assert torch.allclose(gb, upstream.sum((0, 2, 3)))
    assert not torch.equal(out, conv(x, w, b, padding=1))  # the rounding changed something
    assert F.conv2d is torch.nn.functional.conv2d and "simulated" not in F.conv2d.__name__  # restored


# ---------------------------------------------------------------------------- which precision runs


@pytest.mark.parametrize("requested", PRECISIONS)
@pytest.mark.parametrize("device_type,deterministic", [("cpu", False), ("cuda", False), ("cuda", True)])
def test_each_model_trains_at_the_fastest_precision_it_tolerates_and_the_device_offers(
    requested, device_type, deterministic
):
    from arelbo.core.config import load_config
    from arelbo.stages.train import model_precision

    tf32_available = device_type == "cuda" and not deterministic
    for model_id, entry in registry.MODELS.items():
        got = training_precision(
            requested,
            bf16_safe=entry.bf16_safe,
            tf32_safe=entry.tf32_safe,
            device_type=device_type,
            deterministic=deterministic,
        )
        if requested == "bf16" and entry.bf16_safe:
            assert got == "bf16"
        elif requested != "fp32" and entry.tf32_safe and tf32_available:
            assert got == "tf32"
        else:
            assert got == "fp32", (model_id, requested, device_type)
    # Diag-D AR-ELBO: IEEE FP32 whatever the config asks
    assert {
        training_precision(r, bf16_safe=False, tf32_safe=False, device_type="cuda", deterministic=False)
        for r in PRECISIONS
    } == {"fp32"}
    cfg = load_config("config/ci.yaml", check_folders=False)
    assert cfg.train.mnist.precision == "tf32"  # the default: TF32 where tolerated
    expected = "tf32" if tf32_available and requested == "tf32" else "fp32"
    if requested == "tf32":
        import dataclasses

        cfg = dataclasses.replace(cfg, cuda_deterministic=deterministic)
        assert model_precision(cfg, "mnist", "iso_i_arelbo", device_type) == expected
        assert model_precision(cfg, "mnist", "diag_d_arelbo", device_type) == "fp32"
    with pytest.raises(ValueError, match="choose one of fp32, tf32, bf16"):
        training_precision("fp16", bf16_safe=True, tf32_safe=True, device_type="cuda", deterministic=False)


def test_a_config_with_an_unknown_precision_is_refused_naming_the_choices(tmp_path):
    from arelbo.core.config import ConfigError, load_config

    overlay = tmp_path / "fp16.yaml"
    overlay.write_text("train:\n  mnist:\n    precision: fp16\n")
    with pytest.raises(ConfigError, match=r"precision.*fp16.*fp32.*tf32.*bf16"):
        load_config("config/ci.yaml", str(overlay), check_folders=False)


def test_arithmetic_sets_the_switches_and_restores_them(restored_switches):
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = True, True
    with arithmetic("fp32"):
        assert current_tf32_flags() == {"cudnn.allow_tf32": False, "cuda.matmul.allow_tf32": False}
        assert current_precision("cuda") == "fp32"
        with arithmetic("tf32"):  # TF32 convolutions, never TF32 matmuls
            assert current_tf32_flags() == {"cudnn.allow_tf32": True, "cuda.matmul.allow_tf32": False}
            assert current_precision("cuda") == "tf32" and current_precision("cpu") == "fp32"
        assert current_tf32_flags()["cudnn.allow_tf32"] is False
    assert current_tf32_flags() == {"cudnn.allow_tf32": True, "cuda.matmul.allow_tf32": True}
    with pytest.raises(RuntimeError), arithmetic("bf16"):  # bf16: its FP32 parts in IEEE FP32
        assert current_tf32_flags()["cudnn.allow_tf32"] is False
        raise RuntimeError
    assert current_tf32_flags()["cudnn.allow_tf32"] is True  # restored on an error too
    with pytest.raises(ValueError, match="choose one of"):
        set_arithmetic("fp16")


@pytest.mark.parametrize("precision", ["fp32", "tf32"])
def test_a_training_runs_at_its_specs_precision_and_leaves_the_switches_as_it_found_them(
    tmp_path, restored_switches, precision
):
    """The switches every training step and validation sees are those of spec.precision (they are
    process-wide, so this holds on the CPU as on CUDA); after the training they are back."""
    from arelbo.stages.train import TrainSpec, fit

    torch.backends.cudnn.allow_tf32 = precision == "fp32"  # the opposite of what the training wants
    seen = set()
    g = torch.Generator().manual_seed(0)
    train = torch.randint(0, 256, (32, 1, 4, 4), generator=g, dtype=torch.uint8)
    net = torch.nn.Linear(16, 16)

    def loss_fn(net, x):
        seen.add(bool(torch.backends.cudnn.allow_tf32))
        loss = (net(x.flatten(1)) - x.flatten(1)).pow(2).mean()
        return loss, {"mse": loss.detach()}

    spec = TrainSpec("tiny", "mnist", 0, lr=1e-2, epochs=2, batch_size=16, precision=precision)
    fit(net, spec, train, train[:16], loss_fn, tmp_path, device=torch.device("cpu"), progress=False)
    assert seen == {precision == "tf32"}
    assert torch.backends.cudnn.allow_tf32 is (precision == "fp32")
    assert torch.load(tmp_path / "model.pt", weights_only=False)["spec"]["precision"] == precision


def test_every_job_starts_in_ieee_fp32_and_records_it(restored_switches, ci_config):
    """A job (`_job_device`) sets IEEE FP32 for what it does — encoding, sampling, MSE, Inception,
    Section 3 and second-stage trainings — and its records say which arithmetic they came from."""
    from arelbo.cli import _job_device
    from arelbo.core.runtime import device_info

    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = True, True
    device = _job_device(ci_config)
    assert EVALUATION_PRECISION == "fp32"
    assert current_tf32_flags() == {"cudnn.allow_tf32": False, "cuda.matmul.allow_tf32": False}
    assert device_info(device)["precision"] == "fp32"


def test_section3_trainings_are_ieee_fp32_explicitly(ci_config):
    from arelbo.core.layout import grid_points
    from arelbo.stages import section3

    for point in grid_points(ci_config.section3):
        assert section3._point_spec(ci_config, point, 0).precision == "fp32"


# ---------------------------------------------------------------------------- the evidence


def _mnist_batches(ci_config, count: int, size: int = 32):
    from arelbo.stages.data import load_split

    images = load_split("mnist", "train", ci_config)[: count * size].float() / 255
    return [images[i * size : (i + 1) * size] for i in range(count)]


@pytest.mark.slow
@pytest.mark.parametrize("model_id", registry.paper_model_ids())
def test_tf32_convolutions_change_each_tolerant_models_gradient_only_by_rounding(model_id, ci_config):
    """The registry's `tf32_safe` against the measurement it rests on: a fresh MNIST network, two
    batches of 32 real images, the objective under simulated TF32 convolutions against IEEE FP32.
    A tolerant model's loss moves by less than a TF32 rounding (2^-11 relative) and its gradient
    keeps a cosine > 0.99 with FP32's on both batches (measured ≥ 0.999). Diag-D AR-ELBO, which the
    policy keeps in IEEE FP32, falls below on a batch (measured 0.88 and 0.99): its per-pixel
    gradient (μ − x)/((x − μ)² + ε) turns around with the rounding of μ where residuals are small."""
    from arelbo.models.nets import build_net
    from arelbo.models.objectives import loss_and_terms

    torch.manual_seed(0)
    net = build_net(model_id, "mnist").train()
    agreements = []
    for x in _mnist_batches(ci_config, 2):

        def loss(x=x):
            torch.manual_seed(1)  # the same draws in both evaluations (WAE's prior sample)
            return loss_and_terms(model_id, "mnist", net, x, sample=False)[0]

        agreements.append(gradient_agreement(loss, list(net.parameters()), simulated_tf32))
    cosines = [a.gradient_cosine for a in agreements]
    if registry.MODELS[model_id].tf32_safe:
        assert all(a.loss_relative <= 2.0**-11 for a in agreements), agreements
        assert min(cosines) > 0.99, cosines
    else:
        assert model_id == "diag_d_arelbo" and min(cosines) < 0.95, cosines  # why it stays in FP32
