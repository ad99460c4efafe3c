"""The 13 objectives of Table 3 (docs/design.md §4): small pure functions of tensors, one registry table.

Conventions. x and x_mean are N x C x H x W; "per image" means summed over the d = C*H*W pixels;
every objective returns the minibatch mean. Constants: the Gaussian NLL is eq. (10b) as written,
1/2 [(x - mu)^2 / sigma^2 + ln sigma^2], without d/2 ln(2 pi); the AR-ELBO terms are Table 2's,
without the d/2 and -d/2 ln d of eq. (41). Neither changes a gradient.

Objective signature: objective(x, out: Forward, net: VAE, **hparams) -> (loss, terms). `terms`
holds detached scalars: `rec` (the objective's reconstruction term), the unweighted regularisers
(`kl`, `mmd`, `z_reg`, `dec_l2`, `gp`), `mse` (per-image squared error, for monitoring) and, for
the Gaussian-likelihood models, `sigma_x2` (the sigma_x^2 in use, averaged to one number).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from arelbo.core import registry
from arelbo.models.nets import VAE, Forward, NetConfig, net_config

Result = tuple[Tensor, dict[str, Tensor]]  # (loss, terms)
EPS = registry.AR_EPS  # Section 4.2: added before the log, not for Iso-I
IMQ_SCALES = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)  # Tolstikhin et al. (2018)


# ---------------------------------------------------------------------------- building blocks


def squared_error(x: Tensor, x_mean: Tensor) -> Tensor:
    """Per-image ||x - x_mean||^2, shape (N,)."""
    return (x - x_mean).pow(2).flatten(1).sum(1)


def gaussian_kl(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mu, diag exp(logvar)) || N(0, I)) per sample, shape (N,)."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(-1)


def gaussian_nll(x: Tensor, x_mean: Tensor, x_logvar: Tensor) -> Tensor:
    """Eq. (10b) per image: sum_i (x_i - mu_i)^2 / (2 sigma_i^2) + 1/2 ln sigma_i^2, shape (N,).
    `x_logvar` broadcasts against x (scalar, per pixel, per image, or per pixel per image)."""
    return 0.5 * ((x - x_mean).pow(2) * torch.exp(-x_logvar) + x_logvar).flatten(1).sum(1)


# Table 2: the reconstruction term of eq. (10b) with Sigma_x replaced by its minibatch MLE.
def ar_iso_i(x: Tensor, x_mean: Tensor, eps: float = 0.0) -> Tensor:
    return 0.5 * x[0].numel() * torch.log(squared_error(x, x_mean).mean() + eps)


def ar_iso_d(x: Tensor, x_mean: Tensor, eps: float = 0.0) -> Tensor:
    return 0.5 * x[0].numel() * torch.log(squared_error(x, x_mean) + eps).mean()


def ar_diag_i(x: Tensor, x_mean: Tensor, eps: float = 0.0) -> Tensor:
    return 0.5 * torch.log((x - x_mean).pow(2).mean(0) + eps).sum()


def ar_diag_d(x: Tensor, x_mean: Tensor, eps: float = 0.0) -> Tensor:
    return 0.5 * torch.log((x - x_mean).pow(2) + eps).flatten(1).sum(1).mean()


AR_RECONSTRUCTION = {"iso_i": ar_iso_i, "iso_d": ar_iso_d, "diag_i": ar_diag_i, "diag_d": ar_diag_d}


def mle_variance(variance: str, x: Tensor, x_mean: Tensor, eps: float = 0.0) -> Tensor:
    """The minibatch MLE of Sigma_x (Appendix G) shaped to broadcast against x, with eps placed as
    the AR-ELBO term places it: the AR-ELBO's gradient then equals the ELBO's at this sigma_x^2."""
    sq, d = (x - x_mean).pow(2), x[0].numel()
    if variance == "iso_i":
        return (squared_error(x, x_mean).mean() + eps) / d  # shape ()
    if variance == "iso_d":
        return (squared_error(x, x_mean) + eps).view(-1, 1, 1, 1) / d  # one per image
    if variance == "diag_i":
        return sq.mean(0) + eps  # one per pixel
    if variance == "diag_d":
        return sq + eps  # per pixel per image
    raise ValueError(f"unknown variance model {variance!r}")


def imq_mmd(z: Tensor, z_prior: Tensor, scales=IMQ_SCALES) -> Tensor:
    """Unbiased (U-statistic) MMD^2 with the WAE's sum of IMQ kernels k = C / (C + ||a - b||^2),
    C = 2 d_z s (2 d_z times the prior's unit variance); it can be slightly negative."""
    n, m, d_z = len(z), len(z_prior), z.shape[1]

    def kernel(a: Tensor, b: Tensor) -> Tensor:
        # Expanded square rather than cdist: cdist's sqrt has an infinite gradient at distance 0.
        dist2 = (a.pow(2).sum(1, keepdim=True) + b.pow(2).sum(1) - 2.0 * a @ b.T).clamp_min(0.0)
        return sum(2.0 * d_z * s / (2.0 * d_z * s + dist2) for s in scales)

    def off_diagonal_mean(k: Tensor, size: int) -> Tensor:
        return (k.sum() - k.diagonal().sum()) / (size * (size - 1))

    return (
        off_diagonal_mean(kernel(z, z), n)
        + off_diagonal_mean(kernel(z_prior, z_prior), m)
        - 2.0 * kernel(z, z_prior).mean()
    )


def hutchinson_jacobian_sq(output: Tensor, z: Tensor, probe: Tensor | None = None) -> Tensor:
    """Per-sample ||J^T u||^2 with J = d output / d z and u ~ N(0, I) shaped like `output`: a
    one-probe Hutchinson estimate of ||J||_F^2 (E[u^T J J^T u] = tr(J J^T)) with the same variance
    as ||J v||^2, v ~ N(0, I_dz) (both are 2 sum sigma_i^4). The vector-Jacobian form needs one
    backward pass with a graph, so the penalty's gradient w.r.t. the parameters is second order;
    J v by double backward would need third-order BatchNorm derivatives, which torch lacks.
    In training mode BatchNorm couples a batch's images: J is then the batch's full Jacobian and
    the mean over the batch of this estimate is its squared norm divided by N."""
    u = torch.randn_like(output) if probe is None else probe
    (jt_u,) = torch.autograd.grad(output, z, grad_outputs=u, create_graph=True)
    return jt_u.flatten(1).pow(2).sum(1)


def decoder_weight_sq_norm(net: VAE) -> Tensor:
    """||theta_dec||^2 over the decoder's Linear/Conv kernels; biases and BatchNorm scales are
    excluded, as Ghosh et al.'s Keras `kernel_regularizer` excludes them."""
    return sum(w.pow(2).sum() for w in net.decoder_parameters(weights_only=True))


def _terms(x: Tensor, out: Forward, **parts) -> dict[str, Tensor]:
    terms = {"mse": squared_error(x, out.x_mean).mean()}
    terms.update((k, torch.as_tensor(v, dtype=x.dtype, device=x.device)) for k, v in parts.items())
    return {k: v.detach() for k, v in terms.items()}


# ---------------------------------------------------------------------------- objectives


def negative_elbo(x: Tensor, out: Forward, net: VAE) -> Result:
    """Eq. (10a)+(10b): Gaussian NLL + KL. Sigma_x is the net's (trainable; Dai & Wipf), or fixed
    to I when the net has none -- the plain VAE, whose NLL is ||x - mu||^2 / 2."""
    x_logvar = out.x_logvar if out.x_logvar is not None else torch.zeros((), dtype=x.dtype, device=x.device)
    rec = gaussian_nll(x, out.x_mean, x_logvar).mean()
    kl = gaussian_kl(out.mu, out.logvar).mean()
    return rec + kl, _terms(x, out, rec=rec, kl=kl, sigma_x2=x_logvar.detach().exp().mean())


def ar_elbo(x: Tensor, out: Forward, net: VAE, *, variance: str, eps: float = 0.0) -> Result:
    """Table 2's reconstruction term + KL; the implied sigma_x^2 is the minibatch MLE."""
    rec = AR_RECONSTRUCTION[variance](x, out.x_mean, eps)
    kl = gaussian_kl(out.mu, out.logvar).mean()
    sigma_x2 = mle_variance(variance, x.detach(), out.x_mean.detach(), eps).mean()
    return rec + kl, _terms(x, out, rec=rec, kl=kl, sigma_x2=sigma_x2)


def ae(x: Tensor, out: Forward, net: VAE) -> Result:
    rec = squared_error(x, out.x_mean).mean()
    return rec, _terms(x, out, rec=rec)


def wae_mmd(x: Tensor, out: Forward, net: VAE, *, lambda_mmd: float, scales=IMQ_SCALES) -> Result:
    rec = squared_error(x, out.x_mean).mean()
    mmd = imq_mmd(out.z, torch.randn_like(out.z), scales)
    return rec + lambda_mmd * mmd, _terms(x, out, rec=rec, mmd=mmd)


def rae(x: Tensor, out: Forward, net: VAE, *, beta: float, lambda_dec: float) -> Result:
    rec = (x - out.x_mean).pow(2).mean()  # per-pixel mean, as Ghosh et al.
    z_reg = 0.5 * out.z.pow(2).sum(1).mean()
    dec_l2 = decoder_weight_sq_norm(net)
    return rec + beta * z_reg + lambda_dec * dec_l2, _terms(x, out, rec=rec, z_reg=z_reg, dec_l2=dec_l2)


def rae_gp(x: Tensor, out: Forward, net: VAE, *, beta: float, lambda_gp: float) -> Result:
    rec = (x - out.x_mean).pow(2).mean()
    z_reg = 0.5 * out.z.pow(2).sum(1).mean()
    if out.x_mean.requires_grad:
        gp = hutchinson_jacobian_sq(out.x_mean, out.z).mean()
    else:  # evaluated under no_grad (validation): decode again with a graph, for the value only
        with torch.enable_grad():
            z = out.z.detach().requires_grad_()
            gp = hutchinson_jacobian_sq(net.decode(z)[0], z).mean().detach()
    return rec + beta * z_reg + lambda_gp * gp, _terms(x, out, rec=rec, z_reg=z_reg, gp=gp)


# ---------------------------------------------------------------------------- registry

# The 13 models side by side like the paper's Table 2 — id, label, objective (named by its function
# above), stochastic encoder, Σx model, prior, defaults — are in arelbo.core.registry, torch-free, where
# plugins add theirs. MODELS is the live view of that table with each objective imported.


@dataclass(frozen=True)
class ModelSpec:
    entry: registry.ModelEntry

    def __getattr__(self, name: str):  # id, label, stochastic, decoder_variance, has_prior, defaults, …
        if name == "entry":  # not set yet (copy, pickle): no recursion
            raise AttributeError(name)
        return getattr(self.entry, name)

    @property
    def objective(self) -> Callable[..., Result]:
        return self.entry.objective_fn()

    @property
    def trains_in_bf16(self) -> bool:
        """Whether train.<dataset>.precision: bf16 applies (nets.VAE's precision policy)."""
        return self.entry.bf16_safe

    def net_config(self, dataset: str) -> NetConfig:
        return net_config(self.entry, dataset)

    def hparams(self, dataset: str, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
        return self.entry.hparams(dataset, overrides)


class _Models(Mapping):
    """arelbo.core.registry.MODELS with every entry as a ModelSpec (plugins registered later included)."""

    def __getitem__(self, model_id: str) -> ModelSpec:
        return ModelSpec(registry.MODELS[model_id])

    def __iter__(self):
        return iter(registry.MODELS)

    def __len__(self) -> int:
        return len(registry.MODELS)


MODELS: Mapping[str, ModelSpec] = _Models()


def loss_and_terms(
    model_id: str, dataset: str, net: VAE, x: Tensor, hparams: Mapping[str, Any] | None = None, sample: bool = True
) -> Result:
    """Forward pass (one reparameterised sample per image for stochastic models, z = mu otherwise
    or when `sample` is False) and the model's objective with its defaults updated by `hparams`."""
    spec = MODELS[model_id]
    out = net(x, sample=sample)
    return spec.objective(x, out, net, **spec.hparams(dataset, hparams))
