"""Section 3's study (Tables 1 and 5; Appendices D and E): the Appendix D autoencoder trained on
MNIST at one grid point, and the criteria of that point.

Grid points (ids are also output folders, see `arelbo.core.layout.section3_dir`):
    table1/stochastic/log10_sigma_x2=-0.5     σx² fixed, one learned scalar σz² (init 1)
    table1/deterministic/log10_sigma_x2=-0.5  σx² fixed, σz² = 0
    table5/log10_sigma_z2=0.6                 σz² fixed, σx² by the Iso-I AR-ELBO

Objectives (per image, minibatch mean; constants that do not move a gradient are dropped):
    stochastic     ‖x − μθ(μφ(x) + σz ε)‖²/(2σx²) + ½ Σⱼ(μⱼ² + σz² − 1 − ln σz²)
    deterministic  ‖x − μθ(μφ(x))‖²/(2σx²) + ‖μφ(x)‖²/2                         (docs/design.md §7)
    table5         D/2 · ln mean‖x − μθ(μφ(x) + σz ε)‖² + ½ Σⱼ(μⱼ² + σz² − 1 − ln σz²)   (Table 2, Iso-I)
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from arelbo.core.layout import GridPoint, format_log10, grid_points  # noqa: F401 - re-exported
from arelbo.models.nets import AppendixDAutoencoder
from arelbo.models.objectives import ar_iso_i, gaussian_kl, squared_error

GAP_VARIANCES = {"gap_1e-2": 1e-2, "gap_1e-3": 1e-3}


class Section3Model(nn.Module):
    """The Appendix D net plus the posterior's scalar variance: a learned parameter (Table 1,
    stochastic; initialised to σz² = 1), a fixed buffer (Table 5), or none (deterministic)."""

    def __init__(self, point: GridPoint, latent_dim: int = 8):
        super().__init__()
        self.point = point
        self.net = AppendixDAutoencoder(latent_dim)
        if point.table == 1 and point.encoding == "stochastic":
            self.log_sigma_z2 = nn.Parameter(torch.zeros(()))
        elif point.table == 5:
            self.register_buffer("log_sigma_z2", torch.tensor(point.log10_sigma_z2 * math.log(10.0)))
        else:
            self.log_sigma_z2 = None

    @property
    def sigma_z2(self) -> float:
        return 0.0 if self.log_sigma_z2 is None else float(self.log_sigma_z2.detach().exp())

    def encode(self, x: Tensor) -> Tensor:
        return self.net.encode(x)

    def decode(self, z: Tensor) -> Tensor:
        return self.net.decode(z)


def _kl_scalar_variance(mu: Tensor, log_sigma_z2: Tensor) -> Tensor:
    return gaussian_kl(mu, log_sigma_z2.expand_as(mu))


def stochastic_loss(x: Tensor, model: Section3Model, sigma_x2: float):
    mu = model.encode(x)
    z = mu + (0.5 * model.log_sigma_z2).exp() * torch.randn_like(mu)
    x_mean = model.decode(z)
    rec = squared_error(x, x_mean).mean() / (2.0 * sigma_x2)
    kl = _kl_scalar_variance(mu, model.log_sigma_z2).mean()
    return rec + kl, {
        "rec": rec.detach(),
        "kl": kl.detach(),
        "mse": squared_error(x, x_mean).mean().detach(),
        "sigma_z2": model.log_sigma_z2.detach().exp(),
    }


def deterministic_loss(x: Tensor, model: Section3Model, sigma_x2: float):
    mu = model.encode(x)
    x_mean = model.decode(mu)
    se = squared_error(x, x_mean).mean()
    z_reg = 0.5 * mu.pow(2).sum(1).mean()
    return se / (2.0 * sigma_x2) + z_reg, {
        "rec": (se / (2.0 * sigma_x2)).detach(),
        "z_reg": z_reg.detach(),
        "mse": se.detach(),
    }


def fixed_sigma_z_arelbo_loss(x: Tensor, model: Section3Model):
    mu = model.encode(x)
    z = mu + (0.5 * model.log_sigma_z2).exp() * torch.randn_like(mu)
    x_mean = model.decode(z)
    rec = ar_iso_i(x, x_mean)
    kl = _kl_scalar_variance(mu, model.log_sigma_z2).mean()
    se = squared_error(x, x_mean).mean().detach()
    return rec + kl, {"rec": rec.detach(), "kl": kl.detach(), "mse": se, "sigma_x2": se / x[0].numel()}


def group_loss(group: str):
    """`loss(model, x, value)` of one group of grid points (GridPoint.group), `value` the scalar
    the group's points differ in: σx² in Table 1; Table 5's fixed σz² is the model's own buffer."""
    if group == "table5":
        return lambda model, x, value: fixed_sigma_z_arelbo_loss(x, model)
    if group == "table1/stochastic":
        return lambda model, x, sigma_x2: stochastic_loss(x, model, sigma_x2)
    if group == "table1/deterministic":
        return lambda model, x, sigma_x2: deterministic_loss(x, model, sigma_x2)
    raise ValueError(f"unknown Section 3 group {group!r}")


def point_value(point: GridPoint) -> float:
    """The scalar `group_loss` takes for this point (0 for Table 5, whose σz² the model holds)."""
    return 10.0**point.log10_sigma_x2 if point.table == 1 else 0.0


def loss_fn_for(point: GridPoint):
    """`loss_fn(model, x) -> (loss, terms)` of a grid point, for `arelbo.stages.train.fit`."""
    loss, value = group_loss(point.group), point_value(point)
    return lambda model, x: loss(model, x, value)


# ---------------------------------------------------------------------------- training


def study_images(cfg, split: str = "train"):
    """The MNIST images of the study: the config's split, cut to section3.train_limit for train."""
    from arelbo.stages.data import load_split

    images = load_split("mnist", split, cfg)
    limit = cfg.section3.train_limit
    return images[:limit] if (split == "train" and limit) else images


def _point_spec(cfg, point: GridPoint, seed: int):
    from arelbo.stages.train import TrainSpec

    s3 = cfg.section3
    return TrainSpec(
        model_id=point.id,
        dataset="mnist",
        seed=seed,
        lr=s3.train.lr,
        epochs=s3.train.epochs,
        batch_size=s3.train.batch_size,
        hparams={"latent_dim": s3.latent_dim},
        lr_plateau=False,
        keep="last",
        # IEEE FP32 on every device: the criteria compare models by small differences, and these
        # small nets are launch-bound on a GPU, where TF32 would save little
        precision="fp32",
    )


def _point_meta(cfg, point: GridPoint) -> dict:
    return {"config_name": cfg.name, "point": point.id, "latent_dim": cfg.section3.latent_dim}


def _initial_model(cfg, point: GridPoint, seed: int) -> Section3Model:
    from arelbo.core.runtime import seed_everything

    seed_everything(seed)  # network initialisation: the same weights for every point of one seed
    return Section3Model(point, cfg.section3.latent_dim)


def train_point(cfg, point: GridPoint, seed: int, out_dir: Path, *, progress: bool = True) -> Path:
    from arelbo.core.runtime import pick_device
    from arelbo.stages.train import fit

    return fit(
        _initial_model(cfg, point, seed),
        _point_spec(cfg, point, seed),
        study_images(cfg, "train"),
        study_images(cfg, "val"),
        loss_fn_for(point),
        out_dir,
        device=pick_device(cfg.device),
        progress=progress,
        extra_meta=_point_meta(cfg, point),
        keep_checkpoint=cfg.keep_checkpoints,
        checkpoints=cfg.train.checkpoint,
    )


def train_points_batched(
    cfg, points: list[GridPoint], seed: int, out_dirs: list[Path], checkpoint: Path, *, progress: bool = True
) -> list[Path]:
    """The points of one group trained as one vectorised job (section3.batched): the same files in
    the same folders as `train_point` for each, equal to them to float tolerance (tests/test_section3.py)."""
    from arelbo.core.runtime import pick_device
    from arelbo.stages.train import fit_batched

    groups = {p.group for p in points}
    if len(groups) != 1:
        raise ValueError(f"batched points must be of one group, got {sorted(groups)}")
    return fit_batched(
        [_initial_model(cfg, p, seed) for p in points],
        [_point_spec(cfg, p, seed) for p in points],
        torch.tensor([point_value(p) for p in points]),
        study_images(cfg, "train"),
        study_images(cfg, "val"),
        group_loss(groups.pop()),
        out_dirs,
        checkpoint,
        device=pick_device(cfg.device),
        progress=progress,
        extra_metas=[_point_meta(cfg, p) for p in points],
        keep_checkpoint=cfg.keep_checkpoints,
        checkpoints=cfg.train.checkpoint,
    )


def load_point_model(model_file: Path, device=None) -> tuple[Section3Model, dict]:
    from arelbo.stages.train import load_model_meta

    meta = load_model_meta(model_file)  # without running code; a clear error for a cut or unsafe file
    model = Section3Model(GridPoint.parse(meta["point"]), meta["latent_dim"])
    model.load_state_dict(meta["state_dict"])
    model.eval()
    if device is not None:
        model.to(device)
    return model, meta


# ---------------------------------------------------------------------------- criteria


@torch.no_grad()
def encode_all(model: Section3Model, images: Tensor, device, batch_size: int = 1000) -> Tensor:
    out = [
        model.encode(images[i : i + batch_size].to(device).float().div_(255.0))
        for i in range(0, len(images), batch_size)
    ]
    return torch.cat(out)


def _standard_error(per_image: Tensor) -> float:
    n = per_image.numel()
    return float(per_image.std() / n**0.5) if n > 1 else float("nan")


@torch.no_grad()
def criteria(
    model: Section3Model,
    images: Tensor,
    *,
    seed: int,
    device,
    mi_batch_size: int = 10000,
    batch_size: int = 500,
    uncertainty: dict | None = None,
) -> dict[str, float]:
    """Every Section 3 criterion of a trained grid point on `images` (uint8, the training set). With
    `uncertainty` (a dict), the standard errors over images of the per-image means (mse, kl) go in it."""
    uncertainty = {} if uncertainty is None else uncertainty
    from arelbo.metrics.smoothness import expected_gap, expected_local_smoothness, mi_upper_bound

    model = model.to(device).eval()
    point = model.point
    mu = encode_all(model, images, device)
    errors = []
    for i in range(0, len(images), batch_size):
        x = images[i : i + batch_size].to(device).float().div_(255.0)
        errors.append(squared_error(x, model.decode(mu[i : i + batch_size])).double().cpu())
    errors = torch.cat(errors)
    values = {"mse": float(errors.mean())}
    uncertainty["mse"] = _standard_error(errors)
    sigma_z2 = model.sigma_z2
    if point.encoding == "stochastic":
        kl = _kl_scalar_variance(mu.double(), model.log_sigma_z2.double())
        values["kl"] = float(kl.mean())
        uncertainty["kl"] = _standard_error(kl.cpu())
    if point.table == 1 and point.encoding == "stochastic":
        values["sigma_z2"] = sigma_z2
    # One generator per criterion, each seeded from the run's seed: adding a criterion never changes another.
    gen = lambda k: torch.Generator().manual_seed(seed * 1000 + k)  # noqa: E731
    values["mi"] = mi_upper_bound(mu, sigma_z2, batch_size=mi_batch_size, generator=gen(1))
    if sigma_z2 == 0.0:
        uncertainty["mi"] = 0.0  # deterministic encoding: eq. (29) has no Monte-Carlo term, the value is exact
    for k, (name, s2) in enumerate(GAP_VARIANCES.items(), start=2):
        values[name] = expected_gap(model.decode, mu, s2, generator=gen(k), batch_size=batch_size)
    values["els"] = expected_local_smoothness(model.decode, mu, batch_size=batch_size)
    return values


def criteria_records(cfg, model_file: Path, seed: int) -> list[dict]:
    """The tidy records (one per metric) of a grid point's criteria on the training set."""
    from arelbo.core import layout
    from arelbo.core.provenance import provenance
    from arelbo.core.runtime import pick_device
    from arelbo.models.convergence import diagnose_log
    from arelbo.stages.train import training_threads

    device = pick_device(cfg.device)
    model, meta = load_point_model(model_file, device)
    images = study_images(cfg, "train")
    uncertainty: dict[str, float] = {}
    values = criteria(
        model, images, seed=seed, device=device, mi_batch_size=cfg.section3.mi_batch_size, uncertainty=uncertainty
    )
    point, prov = model.point, provenance(cfg, "mnist", device)
    train_log = Path(model_file).parent / layout.TRAIN_LOG
    diagnosis = diagnose_log(train_log)
    convergence = diagnosis.record_fields() if diagnosis is not None else {}
    return [
        {
            "table": point.table,
            "dataset": "mnist",
            **point.keys,
            "seed": int(seed),
            "metric": metric,
            "value": float(value),
            "uncertainty": uncertainty.get(metric, float("nan")),
            "n_images": len(images),
            "config": cfg.name,
            "reduced": bool(cfg.reduced),
            "reduced_because": "; ".join(cfg.reduced_because),
            **convergence,
            "train_threads": training_threads(train_log),  # the record's own count: prov's `threads`
            **prov,
        }
        for metric, value in values.items()
    ]


def write_criteria(cfg, model_file: Path, seed: int, out: Path) -> Path:
    from arelbo.core.runtime import atomic_write_text

    atomic_write_text(out, json.dumps(criteria_records(cfg, model_file, seed), indent=2) + "\n")
    return out


# ---------------------------------------------------------------------------- figures 1-3


@torch.no_grad()
def figure1_rows(
    model: Section3Model, images: Tensor, s2: float, n_perturbations: int, *, generator: torch.Generator, device
) -> np.ndarray:
    """uint8 n × (2 + n_perturbations) × H × W: original, μθ(μφ(x)), then μθ(μφ(x) + ε), ε ~ N(0, s²I)."""

    x = images.to(device).float().div_(255.0)
    mu = model.encode(x)
    eps = torch.randn((n_perturbations, *mu.shape), generator=generator).to(mu) * math.sqrt(s2)
    decoded = [model.decode(mu)] + [model.decode(mu + e) for e in eps]
    cols = [x] + decoded
    grid = torch.stack([c[:, 0] for c in cols], dim=1)  # n × cols × H × W
    return np.asarray(grid.mul(255.0).round().clamp(0, 255).to(torch.uint8).cpu())


def draw_figure1(cfg, model_files: dict[str, Path], seed: int, out: Path) -> Path:
    """Figure 1 from the Table 1 models at section3.figures.figure1_log10_sigma_x2 (both encodings)."""
    from arelbo.core.runtime import pick_device
    from arelbo.reporting.figures import figure1

    figs, device = cfg.section3.figures, pick_device(cfg.device)
    pick = torch.Generator().manual_seed(seed)
    images = study_images(cfg, "train")
    chosen = images[torch.randperm(len(images), generator=pick)[: figs.figure1_images]]
    panels = []
    for path in model_files.values():
        model, _ = load_point_model(Path(path), device)
        p = model.point
        for s2 in (1e-2, 1e-3):
            rows = figure1_rows(
                model,
                chosen,
                s2,
                figs.figure1_perturbations,
                generator=torch.Generator().manual_seed(seed + 1),
                device=device,
            )
            panels.append(
                {
                    "row": p.log10_sigma_x2,
                    "rows": rows,
                    "title": f"σx² = {10**p.log10_sigma_x2:.3g}, {p.encoding}\ns² = {s2:g}",
                }
            )
    panels.sort(key=lambda q: -q["row"])
    return figure1(
        panels,
        out,
        caption=_figure_caption(
            cfg, "Figure 1: red = original, blue = μθ(μφ(x)), others = μθ(μφ(x) + ε), ε ~ N(0, s²I)"
        ),
    )


def draw_tsne(cfg, model_files: dict[str, Path], seed: int, out: Path, *, title: str) -> Path:
    """Figures 2/3: t-SNE of the encoder means of `tsne_points` training images (coloured by digit)
    with `tsne_prior_points` samples of the prior N(0, I) in pink."""
    from arelbo.core.runtime import pick_device
    from arelbo.reporting.figures import tsne_figure
    from arelbo.stages.data import mnist_labels

    figs, device = cfg.section3.figures, pick_device(cfg.device)
    images = study_images(cfg, "train")
    labels = mnist_labels("train", cfg, limit=len(images))
    idx = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))[: figs.tsne_points]
    panels = []
    for path in model_files.values():
        model, _ = load_point_model(Path(path), device)
        mu = encode_all(model, images[idx], device).double().cpu().numpy()
        prior = torch.randn(
            (figs.tsne_prior_points, mu.shape[1]),
            generator=torch.Generator().manual_seed(seed + 2),
            dtype=torch.float64,
        ).numpy()
        p = model.point
        name = (
            f"log10 σx² = {format_log10(p.log10_sigma_x2)}"
            if p.table == 1
            else f"log10 σz² = {format_log10(p.log10_sigma_z2)}"
        )
        panels.append(
            {"title": name, "latents": mu, "labels": np.asarray(labels)[idx.numpy()], "prior": prior, "seed": seed}
        )
    return tsne_figure(panels, out, caption=_figure_caption(cfg, title))


def _figure_caption(cfg, text: str) -> str:
    reduced = " — reduced config, not comparable with the paper" if cfg.reduced else ""
    return f"{text} (config {cfg.name}{reduced})"
