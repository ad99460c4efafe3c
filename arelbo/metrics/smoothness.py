"""Section 3's criteria of decoder smoothness and posterior collapse (docs/design.md §6; paper eqs. 5, 6, 29).

All functions take the encoder means ``mu`` (N×d_z) of the evaluation set and, where needed, the
decoder mean ``decode: z (B×d_z) -> x (B×…)``. Random draws come from an explicit
``torch.Generator`` so that a criterion is reproducible from the config's seed.

- :func:`expected_local_smoothness`: E_x ‖∇_z μθ(μφ(x))‖²_F / d_z with the exact Jacobian
  (``torch.func.jacfwd``: d_z forward-mode products per point, vmapped over a batch).
- :func:`expected_gap`: Δ²(s²) = E_x E_{ε,ε'~N(0,s²I)} ‖μθ(μφ(x)+ε) − μθ(μφ(x)+ε')‖², one
  Monte-Carlo pair per point. For a linear decoder Wz + b it is 2·s²·‖W‖²_F, and for small s²
  Δ²(s²)/(2 s² d_z) → ELS.
- :func:`mi_upper_bound`: eq. (29), −E_x E_{q(z|x)} ln E_{x'} exp(−‖z − μφ(x')‖²/(2σz²)) − d_z/2,
  with x' ranging over a minibatch of N points (one z per x), averaged over minibatches. Its
  expectation lies in [0, ln N]; σz² = 0 (deterministic encoding) is its limit σz² → 0.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

Decoder = Callable[[Tensor], Tensor]


def _batches(n: int, batch_size: int):
    for start in range(0, n, batch_size):
        yield slice(start, min(start + batch_size, n))


@torch.no_grad()
def expected_local_smoothness(decode: Decoder, mu: Tensor, *, batch_size: int = 256) -> float:
    """E_x ‖J(μφ(x))‖²_F / d_z, J = ∂μθ/∂z, computed exactly (no Monte Carlo)."""
    from torch.func import jacfwd, vmap

    n, d_z = mu.shape

    def decode_one(z: Tensor) -> Tensor:
        return decode(z.unsqueeze(0)).reshape(-1)

    jacobian = vmap(jacfwd(decode_one))  # B×d_z -> B×D×d_z
    total = torch.zeros((), dtype=torch.float64)
    for part in _batches(n, batch_size):
        jac = jacobian(mu[part])
        total += jac.double().pow(2).sum().cpu()
    return float(total / n / d_z)


@torch.no_grad()
def expected_gap(
    decode: Decoder, mu: Tensor, s2: float, *, generator: torch.Generator, batch_size: int = 1000
) -> float:
    """Δ²(s²) of eq. (5): one pair (ε, ε') ~ N(0, s²I) per point, averaged over the points."""
    if s2 <= 0:
        raise ValueError(f"the perturbation variance s² must be > 0, got {s2}")
    n = mu.shape[0]
    scale = math.sqrt(s2)
    total = torch.zeros((), dtype=torch.float64)
    for part in _batches(n, batch_size):
        m = mu[part]
        eps = torch.randn(m.shape, generator=generator, device="cpu").to(m) * scale
        eps2 = torch.randn(m.shape, generator=generator, device="cpu").to(m) * scale
        gap = (decode(m + eps) - decode(m + eps2)).flatten(1).double().pow(2).sum(1)
        total += gap.sum().cpu()
    return float(total / n)


@torch.no_grad()
def mi_upper_bound_batch(mu: Tensor, sigma_z2: float, *, generator: torch.Generator) -> float:
    """Eq. (29) on one minibatch of N encoder means (one z ~ N(μφ(x), σz²I) per x)."""
    n, d_z = mu.shape
    mu = mu.double()
    if sigma_z2 == 0.0:
        # σz² → 0: only x' with μφ(x') = μφ(x) keep weight, so the bound is ln N − E ln #{x': μφ(x') = μφ(x)}.
        _, counts = torch.unique(mu, dim=0, return_counts=True)
        return float(math.log(n) - (counts.double() * counts.double().log()).sum() / n)
    eps = torch.randn(mu.shape, generator=generator, device="cpu", dtype=torch.float64).to(mu.device)
    z = mu + math.sqrt(sigma_z2) * eps
    # ‖z_i − μ_j‖² for all pairs, by the expanded square (N² entries; N = 10,000 → 800 MB in float64
    # on CPU is avoided by rows of 1,000).
    log_means = []
    mu_sq = mu.pow(2).sum(1)
    for part in _batches(n, 1000):
        zi = z[part]
        dist2 = (zi.pow(2).sum(1, keepdim=True) + mu_sq - 2.0 * zi @ mu.T).clamp_min(0.0)
        log_means.append(torch.logsumexp(-dist2 / (2.0 * sigma_z2), dim=1) - math.log(n))
    return float(-torch.cat(log_means).mean() - d_z / 2.0)


def mi_upper_bound(mu: Tensor, sigma_z2: float, *, batch_size: int = 10000, generator: torch.Generator) -> float:
    """Eq. (29) averaged over minibatches of `batch_size` points drawn without replacement (a seeded
    shuffle). Points beyond the last full minibatch are left out — a smaller minibatch would cap the
    estimate at a smaller ln N; with fewer than `batch_size` points, all form one minibatch."""
    n = mu.shape[0]
    if n < 2:
        raise ValueError(f"the MI bound needs at least 2 points, got {n}")
    if sigma_z2 < 0:
        raise ValueError(f"σz² must be >= 0, got {sigma_z2}")
    order = torch.randperm(n, generator=generator).to(mu.device)
    size = min(batch_size, n)
    values = [
        mi_upper_bound_batch(mu[order[start : start + size]], sigma_z2, generator=generator)
        for start in range(0, n - size + 1, size)
    ]
    return float(sum(values) / len(values))
