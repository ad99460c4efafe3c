"""arelbo.testing's conformance checks: the paper's 13 models and 4 estimators pass them, and they
fail, saying why, on a model or an estimator that breaks what the workflow relies on."""

from __future__ import annotations

import pytest
import torch

from arelbo.core import registry
from arelbo.testing import check_estimator, check_model, realistic_images

# tiny networks: one thread is ~10× faster than two fighting over a busy CPU (conftest.py)
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("model_id", registry.paper_model_ids())
def test_every_paper_model_conforms(model_id):
    check_model(model_id, batch_size=2)


@pytest.mark.parametrize("estimator_id", list(registry.ESTIMATORS))
def test_every_paper_estimator_conforms(estimator_id):
    check_estimator(estimator_id, n=300 if estimator_id != "gmm100" else 400)


def test_realistic_images_look_like_their_dataset():
    mnist, celeba = realistic_images("mnist", 64), realistic_images("celeba", 8)
    assert mnist.shape == (64, 1, 28, 28) and celeba.shape == (8, 3, 64, 64)
    assert 0 <= float(mnist.min()) and float(mnist.max()) <= 1
    # MNIST: mostly background (~80 % of pixels < 0.1 in the real set), some bright strokes
    assert 0.5 < float((mnist < 0.1).float().mean()) < 0.95 and float((mnist > 0.5).float().mean()) > 0.02
    assert torch.equal(mnist, realistic_images("mnist", 64))


def _bad_model(monkeypatch, objective):
    monkeypatch.setitem(
        registry.MODELS,
        "broken",
        registry.ModelEntry("broken", "Broken", f"{__name__}:{objective}", True, None, True, source="test"),
    )


def objective_without_mse(x, out, net):
    rec = (x - out.x_mean).pow(2).sum()
    return rec, {"rec": rec.detach()}


def objective_nan(x, out, net):
    rec = (x - out.x_mean).pow(2).sum() * float("nan")
    return rec, {"rec": rec.detach(), "mse": rec.detach()}


def objective_decoder_only(x, out, net):
    rec = (x - net.decode(torch.zeros_like(out.z))[0]).pow(2).flatten(1).sum(1).mean()
    return rec, {"rec": rec.detach(), "mse": rec.detach()}


_CALLS = [0]


def objective_unseeded(x, out, net):  # state outside every seeded generator: differs call to call
    _CALLS[0] += 1
    rec = (x - out.x_mean).pow(2).flatten(1).sum(1).mean() * _CALLS[0]
    return rec, {"rec": rec.detach(), "mse": rec.detach()}


@pytest.mark.parametrize(
    "objective,message",
    [
        ("objective_without_mse", r"terms lack \['mse'\]"),
        ("objective_nan", "finite scalar"),
        ("objective_decoder_only", "no gradient reaches the encoder"),
        ("objective_unseeded", "not deterministic under a seed"),
        ("no_such_function", "cannot import"),
    ],
)
def test_a_broken_model_is_named_with_what_breaks(monkeypatch, objective, message):
    _bad_model(monkeypatch, objective)
    with pytest.raises(AssertionError, match=message):
        check_model("broken", datasets=("mnist",), batch_size=2)


def test_a_broken_estimator_is_named_with_what_breaks(monkeypatch):
    from arelbo.models.estimators import PriorEstimator

    class Unseeded(PriorEstimator):
        def __init__(self, d_z):
            super().__init__(d_z)
            self.id = "unseeded"

        def sample(self, n, seed):
            return torch.randn(n, self.d_z)

    monkeypatch.setattr(
        __import__(__name__), "fit_unseeded", lambda mu, logvar, **kw: Unseeded(mu.shape[1]), raising=False
    )
    monkeypatch.setitem(
        registry.ESTIMATORS,
        "unseeded",
        registry.EstimatorEntry(
            "unseeded", "Unseeded", f"{__name__}:fit_unseeded", "arelbo.models.estimators:load_prior", source="test"
        ),
    )
    with pytest.raises(AssertionError, match="the same seed gave different samples"):
        check_estimator("unseeded", n=100)


def test_a_model_registered_tf32_safe_that_is_not_fails_with_the_fix(monkeypatch):
    """check_model holds a `tf32_safe` registration to the evidence: Diag-D AR-ELBO's objective
    registered as TF32-tolerant is refused, with the entry to change named."""
    diag_d = registry.MODELS["diag_d_arelbo"]
    monkeypatch.setitem(
        registry.MODELS,
        "claims_tf32",
        registry.ModelEntry(**{**diag_d.__dict__, "id": "claims_tf32", "tf32_safe": True}),
    )
    with pytest.raises(AssertionError, match=r"claims_tf32.*tf32_safe=True.*cosine.*tf32_safe=False"):
        check_model("claims_tf32", datasets=("mnist",), batch_size=2)
