"""Latents for the interpolation FIDs of Table 4 (docs/design.md §6): seeded pairs of distinct test images,
their encoder means z = μφ(x), and the spherical interpolation slerp(z_a, z_b, t) at t = 0.5
("mid") or t ~ U(0, 1) per pair ("random")."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

INTERPOLATION_MODES = ("mid", "random")
# Below this sin Ω the slerp weights are 0/0-like; the great circle then degenerates to the chord.
LINEAR_BELOW_SIN = 1e-6


def slerp(z_a: torch.Tensor, z_b: torch.Tensor, t: float | torch.Tensor) -> torch.Tensor:
    """sin((1−t)Ω)/sin Ω·z_a + sin(tΩ)/sin Ω·z_b, Ω the angle between z_a and z_b, over the last
    dimension (batched: N×d rows). `t` is a scalar or one value per row. Where sin Ω ≈ 0 (parallel
    or antiparallel vectors) the result is the linear (1−t)·z_a + t·z_b."""
    t = torch.as_tensor(t, dtype=z_a.dtype, device=z_a.device)
    if t.ndim == z_a.ndim - 1 and t.ndim > 0:
        t = t.unsqueeze(-1)  # one t per row, broadcast over the coordinates
    cos = (F.normalize(z_a, dim=-1) * F.normalize(z_b, dim=-1)).sum(-1, keepdim=True).clamp(-1, 1)
    omega = torch.arccos(cos)
    sin = torch.sin(omega)
    linear = sin < LINEAR_BELOW_SIN
    safe_sin = torch.where(linear, torch.ones_like(sin), sin)  # keeps the unused branch finite
    w_a = torch.where(linear, 1 - t, torch.sin((1 - t) * omega) / safe_sin)
    w_b = torch.where(linear, t, torch.sin(t * omega) / safe_sin)
    return w_a * z_a + w_b * z_b


def _draw_pairs(n_items: int, n_pairs: int, generator: torch.Generator) -> torch.Tensor:
    if n_items < 2:
        raise ValueError(f"interpolation needs at least 2 test items to form distinct pairs, got {n_items}")
    a = torch.randint(n_items, (n_pairs,), generator=generator)
    # b = a + k (mod n) with k uniform on 1..n−1: uniform over the n−1 other items, never a itself.
    b = (a + torch.randint(1, n_items, (n_pairs,), generator=generator)) % n_items
    return torch.stack([a, b], dim=1)


def interpolation_pairs(n_items: int, n_pairs: int, seed: int) -> torch.Tensor:
    """n_pairs×2 LongTensor of ordered index pairs (a, b), a ≠ b, drawn uniformly and independently."""
    return _draw_pairs(n_items, n_pairs, torch.Generator().manual_seed(seed))


class Interpolation(NamedTuple):
    latents: torch.Tensor  # n_pairs×d_z interpolated latents, dtype/device of mu_test
    pairs: torch.Tensor  # n_pairs×2 row indices into mu_test (CPU)
    t: torch.Tensor  # n_pairs interpolation weights (CPU, dtype of mu_test)


def interpolation_latents(mu_test: torch.Tensor, n_pairs: int, mode: str, seed: int) -> Interpolation:
    """slerp between the encoder means of `n_pairs` seeded pairs of distinct test rows. Both modes
    use the same pairs for a given seed (those of `interpolation_pairs`); "random" then draws t from
    the same generator, after the pairs. The evaluation gives both modes the same seed
    (registry.sampler_seed_offset), so Table 4's columns differ only in t."""
    if mode not in INTERPOLATION_MODES:
        raise ValueError(f"unknown interpolation mode {mode!r}; choose one of {', '.join(INTERPOLATION_MODES)}")
    generator = torch.Generator().manual_seed(seed)
    pairs = _draw_pairs(len(mu_test), n_pairs, generator)
    if mode == "mid":
        t = torch.full((n_pairs,), 0.5, dtype=mu_test.dtype)
    else:
        t = torch.rand(n_pairs, generator=generator, dtype=mu_test.dtype)
    index = pairs.to(mu_test.device)
    latents = slerp(mu_test[index[:, 0]], mu_test[index[:, 1]], t.to(mu_test.device))
    return Interpolation(latents, pairs, t)
