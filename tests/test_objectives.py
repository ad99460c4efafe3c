"""Objectives of docs/design.md §4 checked against closed forms, torch.distributions and exact Jacobians."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from arelbo.models.nets import build_net
from arelbo.models.objectives import (
    EPS,
    MODELS,
    decoder_weight_sq_norm,
    gaussian_kl,
    gaussian_nll,
    hutchinson_jacobian_sq,
    imq_mmd,
    loss_and_terms,
    mle_variance,
    negative_elbo,
    squared_error,
)

D_MNIST = 784
VARIANCES = ["iso_i", "diag_i", "iso_d", "diag_d"]


def generator(seed=0):
    return torch.Generator().manual_seed(seed)


def randn(*shape, g):
    return torch.randn(*shape, generator=g, dtype=torch.float64)


def rand(*shape, g):
    return torch.rand(*shape, generator=g, dtype=torch.float64)


# ---------------------------------------------------------------------------- Gaussian pieces


def test_gaussian_kl_matches_torch_distributions():
    g = generator()
    mu, logvar = randn(5, 7, g=g), randn(5, 7, g=g)
    expected = kl_divergence(Normal(mu, (0.5 * logvar).exp()), Normal(0.0, 1.0)).sum(-1)
    torch.testing.assert_close(gaussian_kl(mu, logvar), expected)


def test_gaussian_nll_is_eq_10b_without_the_2pi_constant():
    g = generator()
    x, mean = rand(4, 3, 5, 5, g=g), rand(4, 3, 5, 5, g=g)
    logvar = randn(3, 5, 5, g=g)  # per pixel, broadcast over the batch
    log_prob = Normal(mean, (0.5 * logvar).exp()).log_prob(x).flatten(1).sum(1)
    torch.testing.assert_close(gaussian_nll(x, mean, logvar), -log_prob - 75 / 2 * math.log(2 * math.pi))


@pytest.mark.parametrize("variance", VARIANCES)
def test_trainable_nll_is_minimised_at_the_mle(variance):
    g = generator()
    x, mean = rand(6, 1, 4, 5, g=g), rand(6, 1, 4, 5, g=g)
    best = mle_variance(variance, x, mean).log().requires_grad_()

    def loss(logvar):
        return gaussian_nll(x, mean, logvar).mean()

    (grad,) = torch.autograd.grad(loss(best), best)
    assert grad.abs().max() < 1e-12
    with torch.no_grad():
        for step in (-0.1, 0.1):
            assert loss(best + step) > loss(best) + 1e-4


def test_iso_i_mle_is_mse_over_d():
    g = generator()
    x, mean = torch.rand(6, 1, 28, 28, generator=g), torch.rand(6, 1, 28, 28, generator=g)
    expected = ((x - mean) ** 2).sum() / (6 * D_MNIST)
    torch.testing.assert_close(mle_variance("iso_i", x, mean), expected)


def test_iso_i_trainable_model_is_minimised_over_sigma_at_mse_over_d():
    torch.manual_seed(0)
    net = build_net("iso_i_trainable", "mnist").double()
    x = torch.rand(4, 1, 28, 28, dtype=torch.float64)
    out = net(x)  # out.x_logvar *is* net.x_logvar, so editing the parameter moves the objective
    objective = MODELS["iso_i_trainable"].objective
    with torch.no_grad():
        net.x_logvar.copy_((squared_error(x, out.x_mean).mean() / D_MNIST).log())
    loss, terms = objective(x, out, net)
    (grad,) = torch.autograd.grad(loss, net.x_logvar)
    assert abs(grad) < 1e-9 * D_MNIST
    torch.testing.assert_close(terms["sigma_x2"], terms["mse"] / D_MNIST)
    for step in (-0.05, 0.05):
        with torch.no_grad():
            net.x_logvar += step
            assert objective(x, out, net)[0] > loss
            net.x_logvar -= step


# ---------------------------------------------------------------------------- AR-ELBO = ELBO at the MLE


@pytest.fixture(scope="module")
def arelbo_forward():
    """One float64 MNIST VAE (the four AR-ELBO models share its config) and one forward pass."""
    torch.manual_seed(0)
    net = build_net("iso_i_arelbo", "mnist").double()
    x = torch.rand(4, 1, 28, 28, dtype=torch.float64)
    return net, x, net(x)


@pytest.mark.parametrize("variance", VARIANCES)
def test_ar_elbo_gradient_equals_elbo_gradient_at_the_minibatch_mle(variance, arelbo_forward):
    """Table 2 is eq. (10b) with Sigma_x replaced by its minibatch MLE; since the NLL is stationary
    in Sigma_x there, the gradients w.r.t. the network equal those of the ELBO with that Sigma_x
    held fixed. Both losses see the same forward pass (same z)."""
    net, x, out = arelbo_forward
    spec = MODELS[f"{variance}_arelbo"]
    assert spec.net_config("mnist") == net.config
    hparams = spec.hparams("mnist")
    assert hparams.get("eps", 0.0) == (0.0 if variance == "iso_i" else EPS)

    ar_loss, terms = spec.objective(x, out, net, **hparams)
    mle = mle_variance(variance, x, out.x_mean, hparams.get("eps", 0.0)).detach()
    at_mle, _ = negative_elbo(x, out._replace(x_logvar=mle.log()), net)
    elsewhere, _ = negative_elbo(x, out._replace(x_logvar=(2 * mle).log()), net)

    def gradient(loss, wrt):
        return torch.cat([g.flatten() for g in torch.autograd.grad(loss, wrt, retain_graph=True)])

    params = list(net.parameters())
    g_ar, g_elbo = gradient(ar_loss, params), gradient(at_mle, params)
    torch.testing.assert_close(g_ar, g_elbo, rtol=1e-9, atol=1e-12 * g_ar.abs().max().item())
    # the comparison can tell sigmas apart: at 2 x MLE the reconstruction gradient halves
    g_mean = gradient(ar_loss, out.x_mean)
    torch.testing.assert_close(gradient(elsewhere, out.x_mean), g_mean / 2)
    torch.testing.assert_close(terms["sigma_x2"], mle.mean())
    if variance == "iso_i":  # eq. (41): the omitted constants are d/2 - d/2 ln d
        constant = D_MNIST / 2 - D_MNIST / 2 * math.log(D_MNIST)
        torch.testing.assert_close(at_mle - ar_loss, torch.tensor(constant, dtype=torch.float64))


# ---------------------------------------------------------------------------- MMD


def test_imq_mmd_is_the_unbiased_u_statistic():
    g = generator()
    z, w = randn(5, 3, g=g), randn(4, 3, g=g)
    scales = (0.5, 2.0)

    def k(a, b):
        return sum(6 * s / (6 * s + ((a - b) ** 2).sum()) for s in scales)  # C = 2 d_z s, d_z = 3

    zz = sum(k(z[i], z[j]) for i in range(5) for j in range(5) if i != j) / 20
    ww = sum(k(w[i], w[j]) for i in range(4) for j in range(4) if i != j) / 12
    zw = sum(k(z[i], w[j]) for i in range(5) for j in range(4)) / 20
    torch.testing.assert_close(imq_mmd(z, w, scales), zz + ww - 2 * zw)


def test_imq_mmd_separates_distributions_and_is_unbiased():
    g = generator()

    def sample(n=500, shift=0.0):
        return randn(n, 16, g=g) + shift

    null = max(abs(imq_mmd(sample(), sample()).item()) for _ in range(2))
    assert null < 0.01  # 7 kernels, each at most 1
    assert imq_mmd(sample(shift=1.0), sample()).item() > 10 * 0.01
    small = torch.tensor([imq_mmd(sample(100), sample(100)).item() for _ in range(20)])
    assert (small < 0).any()  # a biased V-statistic would always be >= 0
    assert abs(small.mean()) < 3 * small.std() / math.sqrt(len(small))


# ---------------------------------------------------------------------------- gradient penalty


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.func imports a deprecated torch.jit.script
def test_hutchinson_estimate_matches_the_exact_jacobian_norm():
    torch.manual_seed(0)
    net = build_net("rae_gp", "mnist").double().eval()  # eval: BatchNorm acts per image
    z = torch.randn(2, 16, dtype=torch.float64)

    def decode_one(zi):
        return net.decode(zi[None])[0][0]

    jac = torch.stack([torch.func.jacfwd(decode_one)(zi).reshape(D_MNIST, 16) for zi in z])  # 2 x d x d_z
    exact = jac.pow(2).sum((1, 2))

    # With a given probe u it is exactly ||J^T u||^2 ...
    zg = z.clone().requires_grad_()
    output = net.decode(zg)[0]
    u = torch.randn_like(output)
    torch.testing.assert_close(
        hutchinson_jacobian_sq(output, zg, u), torch.einsum("ndk,nd->nk", jac, u.flatten(1)).pow(2).sum(1)
    )

    # ... and over random probes its mean is ||J||_F^2, within 4 standard errors (var = 2 sum sigma^4).
    probes = 256
    net.float()
    zr = z.float().repeat(probes, 1).requires_grad_()
    estimate = hutchinson_jacobian_sq(net.decode(zr)[0], zr).view(probes, 2).mean(0).double()
    sigma2 = torch.linalg.svdvals(jac).pow(2)
    standard_error = (2 * sigma2.pow(2).sum(1) / probes).sqrt()
    assert (standard_error / exact < 0.04).all()  # tolerance tight enough to mean something
    assert ((estimate - exact).abs() < 4 * standard_error).all()


def test_gradient_penalty_is_differentiable_in_training_mode():
    torch.manual_seed(0)
    net = build_net("rae_gp", "mnist")
    out = net(torch.rand(4, 1, 28, 28))
    gp = hutchinson_jacobian_sq(out.x_mean, out.z).mean()
    grads = torch.autograd.grad(gp, net.decoder_parameters(weights_only=True))
    assert all(torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads)


def test_rae_gp_evaluates_under_no_grad():
    torch.manual_seed(0)
    net = build_net("rae_gp", "mnist").eval()
    with torch.no_grad():
        loss, terms = loss_and_terms("rae_gp", "mnist", net, torch.rand(4, 1, 28, 28))
    assert torch.isfinite(loss) and terms["gp"] > 0


# ---------------------------------------------------------------------------- every model

TERMS = {
    "vae": {"rec", "kl"},
    "wae_mmd": {"rec", "mmd"},
    "ae": {"rec"},
    "rae": {"rec", "z_reg", "dec_l2"},
    "rae_gp": {"rec", "z_reg", "gp"},
    **{f"{v}_trainable": {"rec", "kl"} for v in VARIANCES},
    **{f"{v}_arelbo": {"rec", "kl"} for v in VARIANCES},
}
GAUSSIAN = {"vae", *(f"{v}_trainable" for v in VARIANCES), *(f"{v}_arelbo" for v in VARIANCES)}


@pytest.mark.parametrize("model_id", list(MODELS))
def test_objective_is_finite_and_reaches_every_parameter(model_id):
    torch.manual_seed(0)
    net = build_net(model_id, "mnist")
    x = torch.rand(4, 1, 28, 28)
    loss, terms = loss_and_terms(model_id, "mnist", net, x)
    assert loss.shape == () and torch.isfinite(loss)
    assert set(terms) == TERMS[model_id] | {"mse"} | ({"sigma_x2"} if model_id in GAUSSIAN else set())
    assert all(t.shape == () and torch.isfinite(t) and not t.requires_grad for t in terms.values())
    loss.backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    variance = MODELS[model_id].decoder_variance
    if variance in ("iso_i", "diag_i"):
        assert net.x_logvar.grad.abs().min() > 0
    elif variance == "iso_d":
        assert net.x_logvar_head[-1].weight.grad.abs().sum() > 0
    elif variance == "diag_d":
        assert net.output.weight.grad[:, 1:].abs().sum() > 0


def test_logged_sigma_and_per_pixel_terms():
    torch.manual_seed(0)
    x = torch.rand(4, 1, 28, 28)
    for model_id, sigma_x2 in [
        ("vae", lambda t: 1.0),
        ("iso_i_trainable", lambda t: 1.0),
        ("iso_i_arelbo", lambda t: t["mse"] / D_MNIST),
    ]:
        _, terms = loss_and_terms(model_id, "mnist", build_net(model_id, "mnist"), x)
        torch.testing.assert_close(terms["sigma_x2"], torch.as_tensor(sigma_x2(terms)))
    net = build_net("rae", "mnist")
    _, terms = loss_and_terms("rae", "mnist", net, x)
    torch.testing.assert_close(terms["rec"], terms["mse"] / D_MNIST)  # per-pixel mean
    kernels = sum(p.pow(2).sum() for p in net.decoder_parameters() if p.ndim > 1)  # biases and BN are 1-d
    torch.testing.assert_close(decoder_weight_sq_norm(net), kernels)


# ---------------------------------------------------------------------------- registry


def test_registry():
    assert list(MODELS) == [
        "vae",
        "wae_mmd",
        "ae",
        "rae",
        "rae_gp",
        "iso_i_trainable",
        "diag_i_trainable",
        "iso_d_trainable",
        "diag_d_trainable",
        "iso_i_arelbo",
        "diag_i_arelbo",
        "iso_d_arelbo",
        "diag_d_arelbo",
    ]
    assert {m for m, s in MODELS.items() if not s.has_prior} == {"ae", "rae", "rae_gp"}
    assert {m for m, s in MODELS.items() if not s.stochastic} == {"ae", "rae", "rae_gp", "wae_mmd"}
    assert {m: s.decoder_variance for m, s in MODELS.items() if s.decoder_variance} == {
        f"{v}_trainable": v for v in VARIANCES
    }
    assert all(s.id == m for m, s in MODELS.items())
    assert MODELS["iso_i_arelbo"].label == "Iso-I w/ AR-ELBO"
    assert MODELS["wae_mmd"].hparams("mnist") == {"lambda_mmd": 10.0}
    assert MODELS["wae_mmd"].hparams("celeba") == {"lambda_mmd": 100.0}
    assert MODELS["rae"].hparams("celeba") == {"beta": 1e-4, "lambda_dec": 1e-7}
    assert MODELS["rae_gp"].hparams("mnist") == {"beta": 1e-4, "lambda_gp": 0.5e-7}
    assert MODELS["rae_gp"].hparams("celeba", {"beta": 0.0}) == {"beta": 0.0, "lambda_gp": 1e-7}
    assert MODELS["iso_i_arelbo"].hparams("mnist") == {}  # Table 2: no epsilon for Iso-I
    assert all(MODELS[f"{v}_arelbo"].hparams("celeba") == {"eps": 1e-6} for v in ("diag_i", "iso_d", "diag_d"))
    with pytest.raises(TypeError):
        loss_and_terms("ae", "mnist", build_net("ae", "mnist"), torch.rand(2, 1, 28, 28), {"lambda_mmd": 1.0})
