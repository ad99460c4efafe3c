"""Kernel Inception Distance from pytorch-fid pool3 features, by torch-fidelity (docs/design.md §8).

KID is the unbiased MMD² with the polynomial kernel k(a, b) = (aᵀb/D + 1)³ between generated and
reference features, averaged over random subsets. Unlike FID it has no bias that depends on N, so it
is the metric small-sample configs decide their FID orderings on. Computed by torch-fidelity's
``kid_features_to_metric`` (its definition and defaults: 100 subsets of min(1000, N_gen, N_ref),
degree 3, γ = 1/D, coef0 1), never by hand.
"""

from __future__ import annotations

import numpy as np

KID_SUBSETS = 100
KID_MAX_SUBSET = 1000


def kid_subset_size(n_generated: int, n_reference: int) -> int:
    return min(KID_MAX_SUBSET, int(n_generated), int(n_reference))


def kid(
    generated: np.ndarray, reference: np.ndarray, *, seed: int, subsets: int = KID_SUBSETS
) -> tuple[float, float, int]:
    """(KID mean, KID std over subsets, subset size) of two N×D feature arrays."""
    import torch
    from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, KEY_METRIC_KID_STD, kid_features_to_metric

    size = kid_subset_size(len(generated), len(reference))
    if size < 2:
        raise ValueError(
            f"KID needs at least 2 generated and 2 reference images, got {len(generated)} and {len(reference)}"
        )
    out = kid_features_to_metric(
        torch.from_numpy(np.ascontiguousarray(generated)),
        torch.from_numpy(np.ascontiguousarray(reference)),
        kid_subsets=subsets,
        kid_subset_size=size,
        kid_kernel="poly",
        kid_kernel_poly_degree=3,
        kid_kernel_poly_gamma=None,
        kid_kernel_poly_coef0=1,
        rng_seed=int(seed),
        verbose=False,
    )
    return float(out[KEY_METRIC_KID_MEAN]), float(out[KEY_METRIC_KID_STD]), size
