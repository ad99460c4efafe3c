"""Where every file of the workflow lives: the one home of every path the rules, the CLI and the
stages use (torch-free: the Snakefile imports it). Rules pass wildcard patterns ("{dataset}", "{seed}")
where a job fills in values, so a pattern and the file a job writes come from the same function.

Outputs under `outdir`:
    models/{dataset}/{model}/seed{seed}/            model.pt, train_log.csv, checkpoint.pt, latents.npz
    estimators/{dataset}/{model}/seed{seed}/        {estimator}.pkl|.pt
    samples/{dataset}/{model}/seed{seed}/           {sampler}.npz + {sampler}.png
    metrics/{dataset}/{model}/seed{seed}/           {metric}.json
    sweeps/table1/{encoding}/log10_sigma_x2={v}/seed{seed}/ and sweeps/table5/log10_sigma_z2={v}/seed{seed}/
        (Section 3's grid points: the folder keeps its first name, `sweeps`, so that existing
        results folders stay valid)
    table{1,3,4,5}.tex, tables/table{N}_{tidy,paper,vs_paper}.csv, figures/*.png, claims.{csv,tex},
    costs.csv, config.yaml, configs/<hash>.yaml, report.html
Under `resources`:
    mnist/raw/*-ubyte                             the four verified IDX files
    inception/pt_inception-2015-12-05-6726825d.pth pytorch-fid's weights
    datasets/{tag}/{split}.npy + meta.json        decoded uint8 N×C×H×W caches (tag: dataset_tag())
    fid/{tag}-{split}-n{count}.npz                FID reference statistics (mu, sigma, n, weights hash)
Under `logdir`/<config name>-<outdir hash> (run_logs):
    <stage>/.../<job>.log and benchmarks/<stage>/.../<job>.tsv   (job_log, job_benchmark)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

from arelbo.core import registry

# The clone this package runs from: config/, workflow/ and the Snakefile live beside `arelbo/`.
REPO_ROOT = Path(__file__).resolve().parents[2]


def reference_file(name: str) -> Traversable:
    """A file the package ships under arelbo/reference/ (the paper's tables, claims, costs)."""
    return resources.files("arelbo").joinpath("reference", name)


MNIST_RAW_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
SPLITS = ("train", "val", "test")
INCEPTION_FILENAME = "pt_inception-2015-12-05-6726825d.pth"
# The files of one training's folder (a Table 3 model or a Section 3 grid point).
MODEL_FILE = "model.pt"
TRAIN_LOG = "train_log.csv"
CHECKPOINT_FILE = "checkpoint.pt"
LATENTS_FILE = "latents.npz"
CRITERIA_FILE = "criteria.json"
TIDY_KINDS = ("tidy", "paper", "vs_paper")


def seed_folder(seed: int | str) -> str:
    return f"seed{seed}"


def scored_samplers(estimators, dataset: str, has_prior: bool) -> list[str]:
    """The samplers a model is scored on: the dataset's Table 3 estimator columns among the config's
    `estimators` (arelbo.core.registry; one through the prior only where the model defines it), then
    Table 4's two interpolations."""
    columns = registry.table3_estimators(dataset)
    return [e for e in estimators if e in columns and (has_prior or not registry.ESTIMATORS[e].needs_prior)] + list(
        registry.INTERPOLATION_SAMPLERS
    )


def mnist_raw_dir(resources: str | Path) -> Path:
    return Path(resources) / "mnist" / "raw"


def inception_weights(resources: str | Path) -> Path:
    return Path(resources) / "inception" / INCEPTION_FILENAME


def dataset_tag(dataset: str, celeba_root: str | Path | None = None) -> str:
    """Name of a dataset's caches. CelebA's carries a hash of its folder, so the real data and a
    synthetic stand-in (or two downloads) never share a cache or FID reference statistics."""
    if dataset != "celeba":
        return dataset
    import hashlib

    key = str(Path(celeba_root).resolve()) if celeba_root is not None else ""
    return f"celeba-{hashlib.sha1(key.encode()).hexdigest()[:8]}"


def dataset_cache_dir(resources: str | Path, tag: str) -> Path:
    return Path(resources) / "datasets" / tag


def dataset_cache_meta(resources: str | Path, tag: str) -> Path:
    return dataset_cache_dir(resources, tag) / "meta.json"


def fid_reference(resources: str | Path, tag: str, split: str, count: int | str | None) -> Path:
    return Path(resources) / "fid" / f"{tag}-{split}-n{count if count else 'all'}.npz"


def resolved_config(outdir: str | Path, text: str) -> Path:
    """<outdir>/configs/<sha256 prefix>.yaml: the merged config, named by its content."""
    import hashlib

    return Path(outdir) / "configs" / f"{hashlib.sha256(text.encode()).hexdigest()[:16]}.yaml"


def model_dir(outdir: str | Path, dataset: str, model: str, seed: int | str) -> Path:
    return Path(outdir) / "models" / dataset / model / seed_folder(seed)


def model_file(outdir, dataset, model, seed) -> Path:
    return model_dir(outdir, dataset, model, seed) / MODEL_FILE


def train_log(outdir, dataset, model, seed) -> Path:
    return model_dir(outdir, dataset, model, seed) / TRAIN_LOG


def latents_file(outdir, dataset, model, seed) -> Path:
    return model_dir(outdir, dataset, model, seed) / LATENTS_FILE


def estimator_extension(estimator: str) -> str:
    """The second-stage VAE is a torch state dict (.pt); the prior and the GMMs are .pkl files."""
    return "pt" if estimator == "2ndvae" else "pkl"


def estimator_path(outdir, dataset, model, seed, estimator) -> Path:
    return (
        Path(outdir)
        / "estimators"
        / dataset
        / model
        / seed_folder(seed)
        / f"{estimator}.{estimator_extension(estimator)}"
    )


def samples_path(outdir, dataset, model, seed, sampler) -> Path:
    return Path(outdir) / "samples" / dataset / model / seed_folder(seed) / f"{sampler}.npz"


def sample_grid_path(outdir, dataset, model, seed, sampler) -> Path:
    """The PNG grid of a sampler's first images, beside its .npz."""
    return samples_path(outdir, dataset, model, seed, sampler).with_suffix(".png")


def metric_path(outdir, dataset, model, seed, metric) -> Path:
    return Path(outdir) / "metrics" / dataset / model / seed_folder(seed) / f"{metric}.json"


def table_tex(outdir, n: int | str) -> Path:
    return Path(outdir) / f"table{n}.tex"


def table_csv(outdir, n: int | str, kind: str) -> Path:
    """tables/table{n}_{kind}.csv, kind one of TIDY_KINDS (tidy rows, paper-shaped, vs the paper)."""
    if kind not in TIDY_KINDS:
        raise ValueError(f"table CSV kind {kind!r}: one of {', '.join(TIDY_KINDS)}")
    return Path(outdir) / "tables" / f"table{n}_{kind}.csv"


def figure_path(outdir, name: str) -> Path:
    return Path(outdir) / "figures" / f"{name}.png"


def claims_path(outdir, ext: str) -> Path:
    return Path(outdir) / f"claims.{ext}"


def costs_path(outdir) -> Path:
    return Path(outdir) / "costs.csv"


def user_config(outdir) -> Path:
    """<outdir>/config.yaml: the user-facing copy of the merged config a run used."""
    return Path(outdir) / "config.yaml"


def run_logs(logdir: str | Path, name: str, outdir: str | Path) -> Path:
    """<logdir>/<name>-<8 hex digits>: the job logs and benchmark files of the run of config `name`
    into `outdir`. The digits hash the resolved outdir (a relative one from the working directory,
    as Snakemake reads it), so two runs of one config name into two outdirs never overwrite each
    other's logs, and `arelbo costs` never sums a mix of runs; the name stays readable."""
    import hashlib

    key = str(Path(outdir).resolve())
    return Path(logdir) / f"{name}-{hashlib.sha256(key.encode()).hexdigest()[:8]}"


def job_log(logs, stage: str, *parts: str) -> Path:
    """<logs>/<stage>/<parts…>.log: one job's log (the last part names the job)."""
    *folders, name = (stage, *parts)
    return Path(logs, *folders, f"{name}.log")


def job_benchmark(logs, stage: str, *parts: str) -> Path:
    """<logs>/benchmarks/<stage>/<parts…>.tsv: one job's Snakemake benchmark (read by `arelbo costs`)."""
    *folders, name = (stage, *parts)
    return Path(logs, "benchmarks", *folders, f"{name}.tsv")


def celeba_folder(root: str | Path) -> Path | None:
    """The folder holding img_align_celeba/ and list_eval_partition.txt: `root` itself or `root/celeba`
    (torchvision's CelebA(root) layout). None if neither has both."""
    root = Path(root)
    for candidate in (root, root / "celeba"):
        if (candidate / "img_align_celeba").is_dir() and (candidate / "list_eval_partition.txt").is_file():
            return candidate
    return None


# ---------------------------------------------------------------------------- Section 3 grid points
# Ids are also output folders: sweeps/{id}/seed{seed}/ (model.pt, train_log.csv, criteria.json).

ENCODINGS = ("stochastic", "deterministic")
_POINT_RE = re.compile(
    r"^(?:table1/(?P<encoding>stochastic|deterministic)/log10_sigma_x2=(?P<sx>-?\d+\.\d)"
    r"|table5/log10_sigma_z2=(?P<sz>-?\d+\.\d))$"
)


def format_log10(value: float) -> str:
    """One decimal, no negative zero: 0.0, -0.1, 1.0 (grid values are multiples of 0.1)."""
    return f"{round(float(value), 1) + 0.0:.1f}"


@dataclass(frozen=True)
class GridPoint:
    table: int  # 1 or 5
    encoding: str = "stochastic"  # Table 5 always encodes stochastically
    log10_sigma_x2: float | None = None  # Table 1
    log10_sigma_z2: float | None = None  # Table 5

    @property
    def id(self) -> str:
        if self.table == 1:
            return f"table1/{self.encoding}/log10_sigma_x2={format_log10(self.log10_sigma_x2)}"
        return f"table5/log10_sigma_z2={format_log10(self.log10_sigma_z2)}"

    @property
    def group(self) -> str:
        """The points that train alike but for one scalar (σx² in Table 1 per encoding, σz² in
        Table 5), and so can train as one batched job (section3.batched)."""
        return f"table1/{self.encoding}" if self.table == 1 else "table5"

    @property
    def keys(self) -> dict:
        """The tidy-table keys of this point's records."""
        if self.table == 1:
            return {"encoding": self.encoding, "log10_sigma_x2": float(format_log10(self.log10_sigma_x2))}
        return {"log10_sigma_z2": float(format_log10(self.log10_sigma_z2))}

    @classmethod
    def parse(cls, point_id: str) -> GridPoint:
        m = _POINT_RE.match(point_id)
        if not m:
            raise ValueError(
                f"not a Section 3 grid point: {point_id!r}; expected e.g. "
                "'table1/stochastic/log10_sigma_x2=-0.5' or 'table5/log10_sigma_z2=0.6'"
            )
        if m["sz"] is not None:
            return cls(5, log10_sigma_z2=float(m["sz"]))
        return cls(1, encoding=m["encoding"], log10_sigma_x2=float(m["sx"]))


def grid_points(section3_cfg) -> list[GridPoint]:
    """Every configured point: Table 1's encodings × σx² grid, then Table 5's σz² grid."""
    t1, t5 = section3_cfg.table1, section3_cfg.table5
    return [GridPoint(1, encoding=e, log10_sigma_x2=v) for e in t1.encodings for v in t1.log10_sigma_x2] + [
        GridPoint(5, log10_sigma_z2=v) for v in t5.log10_sigma_z2
    ]


SECTION3_FOLDER = "sweeps"  # the output folder's first name, kept (see the module docstring)


def section3_dir(outdir: str | Path, point_id: str, seed: int | str) -> Path:
    return Path(outdir) / SECTION3_FOLDER / point_id / seed_folder(seed)


def section3_file(outdir, point_id: str, seed, name: str) -> Path:
    """A grid point's MODEL_FILE, TRAIN_LOG or CRITERIA_FILE."""
    return section3_dir(outdir, point_id, seed) / name


def batched_seed_folder(seed: int | str) -> str:
    """A batched job's folder (a Section 3 group, the second stages of one dataset): beside the
    points' or models' own folders, never in one."""
    return f"batched-seed{seed}"


SECTION3_GROUPS = ("table1/stochastic", "table1/deterministic", "table5")


def section3_group_rule(group: str) -> str:
    """The Snakemake rule that trains a batched group: section3_train_table1_stochastic, ..."""
    return "section3_train_" + group.replace("/", "_")


def section3_group_checkpoint(outdir: str | Path, group: str, seed: int | str) -> Path:
    """The resume state of a batched group's training (beside its points' folders, never in one)."""
    return Path(outdir) / SECTION3_FOLDER / group / batched_seed_folder(seed) / CHECKPOINT_FILE
