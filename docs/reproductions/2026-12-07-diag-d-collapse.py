"""Why Diag-D AR-ELBO collapses on MNIST here: the trained decoders of a run, read on the test split.

    .venv/bin/python docs/reproductions/2026-12-07-diag-d-collapse.py [--results results/cpu-convergence]

For the run's Diag-D AR-ELBO (and, for comparison, the other AR-ELBO models it trained) it prints
- the decoder's pre-sigmoid outputs (logits) on stroke pixels (x > 0.5) and on background pixels
  (x = 0), and the sigmoid's slope on the strokes: how much gradient can still reach them;
- each model's reconstructions scored by Diag-D's reconstruction objective (Table 2,
  ½ Σᵢ ln((xᵢ − μᵢ)² + ε), ε = 1e-6, averaged over the images) next to the score of an all-black
  image and of a perfect reconstruction (every pixel at the floor, 784 · ½ ln ε).
Used by docs/reproductions/2026-12-07-cpu-convergence.md ("Why Diag-D collapses").
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from arelbo.core.config import load_config  # noqa: E402
from arelbo.core.registry import AR_EPS  # noqa: E402
from arelbo.stages.data import load_split  # noqa: E402
from arelbo.stages.train import load_trained  # noqa: E402


def diag_d_reconstruction(x: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    """Table 2's Diag-D reconstruction term per image, ε added before the log (Section 4.2)."""
    return 0.5 * torch.log((x - mean) ** 2 + AR_EPS).flatten(1).sum(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=Path, default=Path("results/cpu-convergence"), help="a run's outdir")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cfg = load_config(args.results / "config.yaml")
    x = load_split("mnist", "test", cfg, limit=None).float() / 255.0
    stroke, background = x > 0.5, x == 0
    print(f"MNIST test split: {len(x)} images, {float(background.float().mean()):.1%} of the pixels exactly 0")
    print(
        f"Diag-D's objective: all-black image {float(diag_d_reconstruction(x, torch.zeros_like(x)).mean()):.1f}, "
        f"perfect reconstruction {0.5 * x[0].numel() * float(torch.log(torch.tensor(AR_EPS))):.1f}"
    )
    for model_id in ["diag_d_arelbo", "diag_i_arelbo", "iso_d_arelbo", "iso_i_arelbo"]:
        model_file = args.results / "models" / "mnist" / model_id / "seed0" / "model.pt"
        if not model_file.is_file():
            continue
        net, _ = load_trained(model_file)
        with torch.no_grad():
            mu, _ = net.encode(x)
            logits = net.output(net.decoder(mu))[:, : x.shape[1]]
        mean = torch.sigmoid(logits)
        slope = mean * (1 - mean)
        print(
            f"{model_id:14s} logits on strokes: median {float(logits[stroke].median()):6.1f}, "
            f"max {float(logits[stroke].max()):6.1f}; on background: median {float(logits[background].median()):6.1f}; "
            f"sigmoid slope on strokes: median {float(slope[stroke].median()):.1e}; "
            f"MSE {float(((x - mean) ** 2).flatten(1).sum(1).mean()):6.2f}; "
            f"Diag-D objective {float(diag_d_reconstruction(x, mean).mean()):8.1f}"
        )


if __name__ == "__main__":
    main()
