"""Writes mnist_pool3_pca64.npz: real Inception pool3 features of MNIST images, projected on the 64
leading principal directions of the reference set — small enough to keep in the repository, and
N > D, so tests/test_fid.py can check FID's delta-method standard error against the bootstrap on
real features without 4 minutes of Inception on a CPU.

    .venv/bin/python tests/data/fid/make_mnist_pool3_pca.py      # from the repository root

"generated": the first 1,024 MNIST test images; "reference": the first 512 training images; both
through arelbo's pytorch-fid Inception on the CPU (one thread). Also stored: the projection (`mean`,
`basis`), so that a test can recompute a few rows and check the file.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO))

from arelbo.core import layout  # noqa: E402
from arelbo.core.config import load_config  # noqa: E402
from arelbo.metrics.fid import inception_features  # noqa: E402
from arelbo.metrics.inception_weights import build_inception  # noqa: E402
from arelbo.stages.data import load_split  # noqa: E402

OUT = Path(__file__).with_name("mnist_pool3_pca64.npz")
GENERATED, REFERENCE, DIMENSIONS = 1024, 512, 64


def main() -> None:
    torch.set_num_threads(1)
    cfg = load_config(REPO / "config" / "ci.yaml", check_folders=False)
    inception = build_inception(layout.inception_weights(cfg.resources))

    def features(split: str, n: int) -> np.ndarray:
        images = load_split("mnist", split, cfg, limit=n).numpy()
        return inception_features(images, inception, batch_size=64, device="cpu", progress=True)

    generated, reference = features("test", GENERATED), features("train", REFERENCE)
    mean = reference.mean(0)
    _, _, vt = np.linalg.svd(reference - mean, full_matrices=False)
    basis = vt[:DIMENSIONS].T  # 2048 × 64, orthonormal columns
    np.savez_compressed(
        OUT,
        generated=((generated - mean) @ basis).astype(np.float32),
        reference=((reference - mean) @ basis).astype(np.float32),
        mean=mean.astype(np.float32),
        basis=basis.astype(np.float32),
    )
    print(f"{OUT}: {GENERATED} generated and {REFERENCE} reference features in {DIMENSIONS} dimensions")


if __name__ == "__main__":
    main()
