"""Conformance checks for models and estimators, built-in or a plugin's (docs/extending.md).

A plugin author calls them from their own tests:

    from arelbo.testing import check_model, check_estimator
    def test_my_model():      check_model("my_model")
    def test_my_estimator():  check_estimator("my_estimator")

Each raises AssertionError saying what does not conform (and for which dataset); arelbo's own 13
models and 4 estimators pass them in its suite (tests/test_conformance.py). What they check is
what the workflow relies on: shapes on both datasets, a finite loss and finite gradients on
real-looking images, the terms every training log reports, determinism under a seed, and for an
estimator a save/load round trip and seeded sampling.
"""

from __future__ import annotations

import io
import math
import tempfile
from pathlib import Path

import torch

from arelbo.core import registry

# Terms every objective reports (arelbo.models.objectives' convention): the reconstruction term and the
# per-image squared error, logged per epoch and used by the Σx estimate.
REQUIRED_TERMS = ("rec", "mse")


def realistic_images(dataset: str, n: int, seed: int = 0) -> torch.Tensor:
    """n images in [0, 1] of the dataset's shape that look like it at the scale of a network's
    receptive field: MNIST-like strokes (smooth blobs on a zero background), CelebA-like smooth
    colour fields. No download needed, the same for the same seed."""
    from arelbo.models.nets import ARCHITECTURES

    channels, height, width = ARCHITECTURES[dataset].image_shape
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randn(n, channels, max(height // 4, 2), max(width // 4, 2), generator=g)
    smooth = torch.nn.functional.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)
    if dataset == "mnist":  # mostly black, bright strokes: MNIST's pixel histogram
        return torch.sigmoid(6.0 * (smooth - 1.0))
    return torch.sigmoid(1.5 * smooth)


def _fail(what: str, message: str):
    raise AssertionError(f"{what}: {message}")


def check_model(model_id: str, *, datasets=registry.DATASETS, batch_size: int = 4, seed: int = 0) -> None:
    """The model `model_id` (registered) on each dataset: its network's shapes, a finite loss with
    the required terms, finite gradients reaching the encoder and the decoder, the same loss for
    the same seed, validation (no_grad) working, a save/load round trip of its weights,
    hyper-parameter defaults its schema accepts, and — for a model registered `tf32_safe` — a
    gradient under TF32 convolutions (simulated) that points where IEEE FP32's does."""
    import jsonschema

    from arelbo.core.runtime import seed_everything
    from arelbo.models.nets import build_net
    from arelbo.models.objectives import loss_and_terms

    if model_id not in registry.MODELS:
        _fail(model_id, f"not registered; known: {', '.join(registry.MODELS)}")
    entry = registry.MODELS[model_id]
    try:
        entry.objective_fn()
    except registry.PluginError as error:
        _fail(model_id, str(error))
    for dataset in datasets:
        what = f"model {model_id!r} on {dataset}"
        jsonschema.validate(
            entry.hparams(dataset),
            {"type": "object", "additionalProperties": False, "properties": entry.hparam_properties()},
        )
        x = realistic_images(dataset, batch_size, seed)

        def one_step():
            seed_everything(seed)
            net = build_net(model_id, dataset).train()
            loss, terms = loss_and_terms(model_id, dataset, net, x)
            return net, loss, terms

        net, loss, terms = one_step()
        out = net(x)
        if out.x_mean.shape != x.shape:
            _fail(what, f"decoder mean has shape {tuple(out.x_mean.shape)}, expected {tuple(x.shape)}")
        if out.mu.shape != (batch_size, net.latent_dim) or out.z.shape != out.mu.shape:
            _fail(
                what,
                f"latents have shapes mu {tuple(out.mu.shape)}, z {tuple(out.z.shape)}; "
                f"expected ({batch_size}, {net.latent_dim})",
            )
        if (out.logvar is not None) != entry.stochastic:
            _fail(
                what,
                f"stochastic={entry.stochastic} but the encoder {'gives' if out.logvar is not None else 'lacks'} "
                "a log-variance",
            )
        if loss.ndim != 0 or not torch.isfinite(loss):
            _fail(what, f"loss must be a finite scalar, got {loss}")
        missing = [t for t in REQUIRED_TERMS if t not in terms]
        if missing:
            _fail(what, f"terms lack {missing} (every objective reports {list(REQUIRED_TERMS)})")
        if entry.estimates_sigma_x and "sigma_x2" not in terms:
            _fail(what, "estimates_sigma_x=True but the terms lack 'sigma_x2' (the σx² the MSE job reports)")
        for name, value in terms.items():
            value = torch.as_tensor(value)
            if value.numel() != 1 or not torch.isfinite(value).all() or value.requires_grad:
                _fail(what, f"term {name!r} must be a finite detached scalar, got {value}")
        loss.backward()
        grads = {n: p.grad for n, p in net.named_parameters()}
        bad = [n for n, g in grads.items() if g is not None and not torch.isfinite(g).all()]
        if bad:
            _fail(what, f"non-finite gradients in {bad[:5]}")
        for part in ("encoder.", "decoder."):
            if not any(g is not None and g.abs().sum() > 0 for n, g in grads.items() if n.startswith(part)):
                _fail(what, f"no gradient reaches the {part.rstrip('.')}")
        _, again, _ = one_step()
        if not math.isclose(float(again.detach()), float(loss.detach()), rel_tol=1e-6, abs_tol=1e-6):
            _fail(what, f"not deterministic under a seed: loss {float(loss.detach())} then {float(again.detach())}")
        net.eval()
        with torch.no_grad():
            val_loss, _ = loss_and_terms(model_id, dataset, net, x, sample=False)
        if not torch.isfinite(val_loss):
            _fail(what, f"validation (no_grad, z = mu) loss is not finite: {val_loss}")
        if entry.tf32_safe:
            _check_tf32_tolerance(
                what, model_id, dataset, realistic_images(dataset, TF32_CHECK_IMAGES[dataset], seed), seed
            )
        # save/load round trip (what model.pt holds): a fresh network with the saved state gives
        # the same deterministic reconstruction
        buffer = io.BytesIO()
        torch.save(net.state_dict(), buffer)
        buffer.seek(0)
        fresh = build_net(model_id, dataset)
        fresh.load_state_dict(torch.load(buffer, weights_only=True))
        fresh.eval()
        with torch.no_grad():
            if not torch.equal(fresh(x, sample=False).x_mean, net(x, sample=False).x_mean):
                _fail(what, "a network loaded from its saved state reconstructs differently")


# A model registered tf32_safe must keep its gradient within this cosine of IEEE FP32's under
# simulated TF32 convolutions, on TF32_CHECK_IMAGES synthetic images (its own batch: with 2 images
# batch normalisation makes every model's gradient fragile). Measured on fresh networks: the 12
# tolerant paper models ≥ 0.998 (8 MNIST-like images) and ≥ 0.999 (4 CelebA-like), Diag-D AR-ELBO
# 0.97 and 0.57 (docs/engineering-notes.md, "Precision measurements").
TF32_MIN_GRADIENT_COSINE = 0.99
TF32_CHECK_IMAGES = {"mnist": 8, "celeba": 4}  # CelebA's net: ~1 s per image and pass on one CPU thread


def _check_tf32_tolerance(what: str, model_id: str, dataset: str, x: torch.Tensor, seed: int) -> None:
    from arelbo.core.runtime import seed_everything
    from arelbo.models.nets import build_net
    from arelbo.models.objectives import loss_and_terms
    from arelbo.models.precision import gradient_agreement, simulated_tf32

    seed_everything(seed)
    net = build_net(model_id, dataset).train()

    def loss():
        seed_everything(seed + 1)  # the same draws in both evaluations
        return loss_and_terms(model_id, dataset, net, x, sample=False)[0]

    agreement = gradient_agreement(loss, list(net.parameters()), simulated_tf32)
    if not agreement.gradient_cosine >= TF32_MIN_GRADIENT_COSINE:
        _fail(
            what,
            f"registered tf32_safe=True, but with TF32 convolutions (simulated) its gradient's cosine with "
            f"IEEE FP32's is {agreement.gradient_cosine:.3f} (< {TF32_MIN_GRADIENT_COSINE}): register it with "
            "tf32_safe=False, so that it trains in IEEE FP32 on CUDA",
        )


def check_estimator(
    estimator_id: str, *, d_z: int = 16, n: int = 600, seed: int = 0, settings: dict | None = None
) -> None:
    """The estimator `estimator_id` (registered), fitted on latents of a known mixture for a
    stochastic and a deterministic encoder: the object it returns, sample shape/dtype/device, the
    same samples for the same seed (also from a second fit with the same seed, and after a save/load
    round trip), different samples for another seed. `settings`: its fit settings (for a slow
    estimator, small ones; the 2nd VAE gets a few epochs of a small net by default)."""
    from arelbo.models.estimators import Estimator, fit_estimator, load_estimator, save_estimator

    if estimator_id not in registry.ESTIMATORS:
        _fail(estimator_id, f"not registered; known: {', '.join(registry.ESTIMATORS)}")
    if settings is None and estimator_id == "2ndvae":
        settings = {"epochs": 2, "lr": 1e-3, "batch_size": 64, "lr_halve_every": 30, "hidden": 32, "depth": 2}
    g = torch.Generator().manual_seed(seed)
    centres = 3.0 * torch.randn(4, d_z, generator=g)
    mu = centres[torch.arange(n) % 4] + 0.5 * torch.randn(n, d_z, generator=g)
    logvar = torch.full((n, d_z), -2.0)
    for kind, lv in (("stochastic", logvar), ("deterministic", None)):
        what = f"estimator {estimator_id!r} ({kind} encoder)"

        def fit():
            return fit_estimator(estimator_id, mu, lv, seed=seed, settings=settings, device="cpu", progress=False)

        try:
            est = fit()
        except TypeError as error:
            _fail(what, str(error))
        if not isinstance(est, Estimator):
            _fail(what, f"fit returned {type(est).__name__}, not an arelbo.models.estimators.Estimator")
        z = est.sample(50, seed=7)
        if z.shape != (50, d_z) or z.dtype != torch.float32 or z.device.type != "cpu":
            _fail(
                what,
                f"sample(50, seed) gave {tuple(z.shape)} {z.dtype} on {z.device}; expected "
                f"(50, {d_z}) float32 on the CPU",
            )
        if not torch.isfinite(z).all():
            _fail(what, "samples are not finite")
        if not torch.equal(z, est.sample(50, seed=7)):
            _fail(what, "the same seed gave different samples (draw from a generator seeded by `seed` only)")
        if torch.equal(z, est.sample(50, seed=8)):
            _fail(what, "another seed gave the same samples")
        if not torch.equal(fit().sample(50, seed=7), z):
            _fail(what, "two fits with the same seed sample differently (seed the fit from `seed`)")
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "estimator"
            save_estimator(est, path)
            loaded = load_estimator(path)
        if loaded.id != est.id or loaded.d_z != est.d_z or not torch.equal(loaded.sample(50, seed=7), z):
            _fail(what, "save/load round trip changed the estimator (payload() must hold all its load needs)")
