"""Whether a training had converged when it stopped, from its per-epoch log (docs/design.md,
"Convergence"). Torch-free: read by the evaluation jobs, which copy it into every metric and
criteria record, and so by the tables and the claims.

A training counts as converged when, over its last WINDOW epochs, its validation objective moved by
at most OBJECTIVE_TOLERANCE of its size and (Section 3's stochastic points) σz² by at most
SIGMA_Z2_TOLERANCE. A log of fewer than WINDOW + 1 epochs cannot show that and counts as not
converged. A KL below KL_COLLAPSE_NATS is reported as a collapse, but does not make a training
unconverged: a collapse can be where a model converges, and some claims test exactly that.

The thresholds were set before any run's verdicts were read, and are not tuned to verdicts.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

WINDOW = 3  # epochs over which "still moving" is judged
OBJECTIVE_TOLERANCE = 0.01  # relative change of the validation objective over WINDOW epochs
SIGMA_Z2_TOLERANCE = 0.05  # relative change of the learned σz² over WINDOW epochs
KL_COLLAPSE_NATS = 1.0  # validation KL per image below which the posterior carries < 1 nat: collapsed


@dataclass(frozen=True)
class Convergence:
    """The diagnostics of one training's log."""

    converged: bool
    epochs: int
    objective_change: float  # relative, over the last WINDOW epochs (NaN: too few epochs)
    lr_reduced: bool  # the plateau schedule lowered the learning rate at least once
    kl: float  # the last epoch's validation KL per image (NaN: the objective has none)
    kl_collapsed: bool
    sigma_z2_change: float  # relative, over the last WINDOW epochs (NaN: no learned σz²)
    reasons: tuple[str, ...]  # why it counts as not converged (empty when converged)

    def note(self) -> str:
        """One line for a reader: "" when converged, else what is still moving."""
        return "; ".join(self.reasons)

    def record_fields(self) -> dict:
        """What every record of the trained model carries."""
        return {
            "converged": self.converged,
            "convergence": self.note(),
            "epochs_trained": self.epochs,
            "objective_change": self.objective_change,
            "kl_collapsed": self.kl_collapsed,
        }


def _relative_change(values: list[float]) -> float:
    if len(values) < WINDOW + 1:
        return math.nan
    before, last = values[-1 - WINDOW], values[-1]
    scale = max(abs(before), abs(last))
    return abs(last - before) / scale if scale > 0 else 0.0


def _column(rows: list[dict], name: str) -> list[float]:
    values = []
    for row in rows:
        text = row.get(name)
        if text in (None, ""):
            return []
        values.append(float(text))
    return values


def diagnose(
    rows: list[dict], objective_column: str = "val_loss", objective_name: str = "validation objective"
) -> Convergence:
    """The diagnostics of a training log's rows (train_log.csv: epoch, lr, val_loss, val_kl, …;
    `objective_column` names another log's objective, called `objective_name` in the reasons)."""
    epochs = len(rows)
    objective = _column(rows, objective_column)
    lrs = _column(rows, "lr")
    kl_values = _column(rows, "val_kl")
    sigma_z2 = _column(rows, "val_sigma_z2")
    objective_change = _relative_change(objective)
    sigma_z2_change = _relative_change(sigma_z2) if sigma_z2 else math.nan
    kl = kl_values[-1] if kl_values else math.nan
    reasons = []
    if epochs < WINDOW + 1:
        reasons.append(f"{epochs} epoch{'s' * (epochs != 1)}: too few to tell (needs {WINDOW + 1})")
    else:
        if not objective_change <= OBJECTIVE_TOLERANCE:
            reasons.append(
                f"{objective_name} still moving ({100 * objective_change:.1f} % over the last {WINDOW} epochs)"
            )
        if sigma_z2 and not sigma_z2_change <= SIGMA_Z2_TOLERANCE:
            reasons.append(f"σz² still moving ({100 * sigma_z2_change:.0f} % over the last {WINDOW} epochs)")
    return Convergence(
        converged=not reasons,
        epochs=epochs,
        objective_change=objective_change,
        lr_reduced=bool(lrs) and min(lrs) < lrs[0],
        kl=kl,
        kl_collapsed=bool(kl_values) and kl < KL_COLLAPSE_NATS,
        sigma_z2_change=sigma_z2_change,
        reasons=tuple(reasons),
    )


def diagnose_log(path: str | Path) -> Convergence | None:
    """The diagnostics of a train_log.csv; None when there is no log (a model trained elsewhere)."""
    path = Path(path)
    if not path.is_file():
        return None
    with path.open(newline="") as f:
        return diagnose(list(csv.DictReader(f)))


def diagnose_second_stage(fit_log: list[dict]) -> Convergence:
    """A second-stage VAE's fit (its estimator file's `fit_log`: one row per epoch, `loss` the
    epoch's mean training objective on fresh draws of u; it has no validation split), judged by the
    same rule as a first-stage training."""
    return diagnose(fit_log, objective_column="loss", objective_name="second stage's training objective")


def with_second_stage(fields: dict, second: Convergence) -> dict:
    """A record's convergence fields (`Convergence.record_fields` of the trained model) when the record
    also rests on the model's second stage (the 2nd-VAE sampler's FID and KID): converged only if both
    are, the reasons of both, and the second stage's own diagnostics beside them."""
    notes = [fields.get("convergence") or "", *(f"second stage: {r}" for r in second.reasons)]
    return {
        **fields,
        "converged": bool(fields.get("converged", True)) and second.converged,
        "convergence": "; ".join(n for n in notes if n),
        "second_stage_converged": second.converged,
        "second_stage_epochs": second.epochs,
        "second_stage_objective_change": second.objective_change,
    }
