"""Typed configuration: YAML files merged in order, validated by the workflow's JSON schema.

No torch import here: the Snakefile imports this module at parse time (cluster jobs re-parse it).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from arelbo.core.errors import ArelboError
from arelbo.core.layout import REPO_ROOT

SCHEMA_PATH = REPO_ROOT / "workflow" / "schemas" / "config.schema.yaml"
DEFAULT_CONFIG = REPO_ROOT / "config" / "config.yaml"


class ConfigError(ArelboError, ValueError):
    """Raised with every problem of a config at once, each naming the key and the fix."""


def clone_file(path: Path) -> Path:
    """`path`, a file of the clone arelbo runs from (config/, workflow/). A wheel install has
    neither (they are the workflow's, not the package's), so a command that reads them says so
    here instead of failing later on a missing file."""
    if not path.is_file():
        raise ConfigError(
            f"arelbo runs from a clone of its repository (the Snakefile, workflow/ and config/ live "
            f"there): {path} not found. This arelbo is imported from {Path(__file__).resolve().parents[1]}; "
            "clone the repository, run `make provision` in it (an editable install into its .venv) and "
            "run arelbo from there."
        )
    return path


# ---------------------------------------------------------------------------- typed view
# One home per default (docs/design.md §10): every setting config/config.yaml holds has its value there
# and no default here; a dataclass default exists only for a setting config.yaml does not hold.


@dataclass(frozen=True)
class SplitLimits:
    train: int | None
    val: int | None
    test: int | None


@dataclass(frozen=True)
class SyntheticStandin:
    n: int
    seed: int = 0


@dataclass(frozen=True)
class MnistData:
    local_copy: str | None
    val_size: int
    limit: SplitLimits


@dataclass(frozen=True)
class CelebaData:
    root: str | None
    synthetic_standin: SyntheticStandin | None
    limit: SplitLimits


@dataclass(frozen=True)
class DataConfig:
    mnist: MnistData
    celeba: CelebaData


@dataclass(frozen=True)
class FidConfig:
    reference_split: str
    reference_count: int | None
    n_samples: int
    batch_size: int
    uncertainty: str  # FID_UNCERTAINTIES: how each FID's within-run standard error is estimated
    bootstrap_resamples: int
    # Sample and score every sampler of one model in one job instead of one job per cell: the same
    # files, a scheduling choice (docs/design.md, "One evaluation job per model").
    batched: bool


@dataclass(frozen=True)
class TrainSettings:
    lr: float
    epochs: int
    batch_size: int
    # the fastest arithmetic a training may use (arelbo.core.precision.PRECISIONS): each model trains
    # at the fastest it tolerates; tf32 changes nothing on the CPU
    precision: str = "tf32"


@dataclass(frozen=True)
class LrPlateau:
    factor: float
    patience: int


@dataclass(frozen=True)
class CheckpointPolicy:
    """When a training writes its resume state (config `train.checkpoint`): after every
    `every_epochs`-th epoch, or after the first epoch that ends `every_minutes` after the last write
    (None: no time rule). Not part of a training's settings: the cadence changes where a killed run
    resumes, never what it computes."""

    every_epochs: int
    every_minutes: float | None

    def due(self, epoch: int, last_write: float, now: float) -> bool:
        if epoch % self.every_epochs == 0:
            return True
        return self.every_minutes is not None and now - last_write >= 60.0 * self.every_minutes


@dataclass(frozen=True)
class SecondStageSettings:
    """Dai & Wipf's second-stage VAE (docs/design.md §5): what a fitted one depends on (stored with it)."""

    epochs: int
    lr: float
    batch_size: int
    lr_halve_every: int
    hidden: int
    depth: int


@dataclass(frozen=True)
class SecondStageConfig(SecondStageSettings):
    # Fit the second-stage VAEs of every model of one dataset and seed as one vectorised job instead
    # of one job per model: the same files, a scheduling choice (docs/design.md, "Batched second stages").
    batched: bool

    @property
    def settings(self) -> SecondStageSettings:
        return SecondStageSettings(**{f.name: getattr(self, f.name) for f in dataclasses.fields(SecondStageSettings)})


@dataclass(frozen=True)
class TrainConfig:
    mnist: TrainSettings
    celeba: TrainSettings
    lr_plateau: LrPlateau
    checkpoint: CheckpointPolicy


@dataclass(frozen=True)
class Table1Grid:
    log10_sigma_x2: tuple[float, ...]
    encodings: tuple[str, ...]


@dataclass(frozen=True)
class Table5Grid:
    log10_sigma_z2: tuple[float, ...]


@dataclass(frozen=True)
class Section3Figures:
    figure1_log10_sigma_x2: tuple[float, ...]
    figure2_log10_sigma_x2: tuple[float, ...]
    figure3_log10_sigma_z2: tuple[float, ...]
    figure1_images: int
    figure1_perturbations: int
    tsne_points: int
    tsne_prior_points: int


@dataclass(frozen=True)
class Section3Config:
    latent_dim: int
    train: TrainSettings
    table1: Table1Grid
    table5: Table5Grid
    mi_batch_size: int
    figures: Section3Figures
    # Train each group's points (Table 1 per encoding, Table 5) as one vectorised job instead of one
    # job per point: the same files, a scheduling choice (docs/design.md, "Batched grid").
    batched: bool
    train_limit: int | None = None  # a reduced config's cap on the training images (the paper: all)


@dataclass(frozen=True)
class ClusterConfig:
    # SLURM partitions; "" = the cluster's default (workflow/rules/common.smk, `partition`)
    gpu_partition: str
    cpu_partition: str


@dataclass(frozen=True)
class Choices:
    """The switches of the choices the paper leaves open (config `choices:`; each one's paper words,
    default and alternatives: arelbo.core.open_choices). They apply to the Table 3/4 trainings."""

    data: str
    mnist_output: str
    init: str
    batchnorm: str
    adam_epsilon: float
    lr_warmup_epochs: int

    def net_options(self) -> dict:
        """What the network's construction takes from them (arelbo.models.nets.NetConfig)."""
        return {"output": self.mnist_output, "init": self.init, "batchnorm": self.batchnorm}


@dataclass(frozen=True)
class Config:
    name: str
    outdir: str
    resources: str
    datasets: tuple[str, ...]
    models: tuple[str, ...]
    estimators: tuple[str, ...]
    seeds: tuple[int, ...]
    data: DataConfig
    fid: FidConfig
    train: TrainConfig
    section3: Section3Config
    second_stage: SecondStageConfig
    description: str
    reduced: bool
    logdir: str
    device: str
    cuda_deterministic: bool
    keep_checkpoints: bool
    cluster: ClusterConfig
    choices: Choices
    plugins: tuple[str, ...] = ()  # modules registering models and estimators (arelbo.core.registry)
    # why `reduced` is true (derived by from_dict: `reduced_because`); () when the paper's protocol
    reduced_because: tuple[str, ...] = ()
    raw: dict = field(default_factory=dict, compare=False, repr=False)

    def dataset_tag(self, dataset: str) -> str:
        from arelbo.core.layout import dataset_tag

        return dataset_tag(dataset, self.data.celeba.root)

    def estimator_settings(self, estimator_id: str) -> dict:
        """What an estimator's fit is given: the 2nd VAE's `second_stage` settings, a plugin
        estimator's `estimator_settings.<id>` (empty when not set)."""
        if estimator_id == "2ndvae":
            return dataclasses.asdict(self.second_stage.settings)
        return dict((self.raw.get("estimator_settings") or {}).get(estimator_id) or {})

    def fid_reference_count(self, dataset: str) -> int | None:
        """How many reference images a dataset's FID uses: fid.reference_count, or — when that is null,
        "the whole split" — the reference split as this config uses it (data.<dataset>.limit.<split>;
        None = the complete official split)."""
        if self.fid.reference_count is not None:
            return self.fid.reference_count
        return getattr(getattr(self.data, dataset).limit, self.fid.reference_split)

    @property
    def synthetic_datasets(self) -> tuple[str, ...]:
        """Datasets whose numbers come from a generated stand-in, not the real data."""
        celeba = self.data.celeba
        is_synth = celeba.synthetic_standin is not None or (
            celeba.root is not None and (Path(celeba.root) / "ARELBO_SYNTHETIC_STANDIN.txt").exists()
        )
        return ("celeba",) if ("celeba" in self.datasets and is_synth) else ()


def _build(cls, value):
    """Build dataclass `cls` (recursively) from validated plain data."""
    if value is None:
        return None
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name == "raw" or f.name not in value:
            if f.name != "raw" and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(
                    f"config key {f.name!r} ({cls.__name__}) is missing: config/config.yaml defines it, and "
                    "every config is an overlay merged on top of that file. Restore it there."
                )
            continue
        kwargs[f.name] = _coerce(hints[f.name], value[f.name])
    return cls(**kwargs)


def _coerce(hint, value):
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value)
    if origin is tuple:
        if args and args[0] is float:
            return tuple(float(v) for v in value)
        return tuple(value)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        if value is None:
            return None
        for arg in args:
            if dataclasses.is_dataclass(arg):
                return _build(arg, value)
        return value
    if hint is float and isinstance(value, int):
        return float(value)
    return value


# ---------------------------------------------------------------------------- loading


def deep_merge(base: dict, overlay: dict) -> dict:
    """Recursive dict update, the way Snakemake merges --configfile over the Snakefile's configfile."""
    out = copy.deepcopy(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    with open(path) as f:
        try:
            data = yaml.safe_load(f) or {}
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
            what = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise ConfigError(
                f"{where}: YAML syntax error: {what}. Fix the file there (indentation, a missing "
                "colon or an unclosed bracket are the usual causes)."
            ) from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return data


def load_schema() -> dict:
    """The config schema with arelbo.core.registry's id lists and hyper-parameters, and the
    precisions of arelbo.core.precision, filled in (the plugins loaded so far included)."""
    from arelbo.core import open_choices, registry
    from arelbo.core.precision import PRECISIONS

    with open(clone_file(SCHEMA_PATH)) as f:
        schema = yaml.safe_load(f)
    definitions = schema["definitions"]
    definitions["model_train_settings"]["properties"]["precision"]["enum"] = list(PRECISIONS)
    definitions["dataset_id"]["enum"] = list(registry.DATASETS)
    definitions["model_id"]["enum"] = list(registry.model_ids())
    definitions["estimator_id"]["enum"] = list(registry.estimator_ids())

    def closed(properties: dict) -> dict:
        return {"type": "object", "additionalProperties": False, "properties": properties}

    for name, switch in schema["properties"]["choices"]["properties"].items():
        if "enum" in switch:
            switch["enum"] = open_choices.enum(name)
    schema["properties"]["hparams"]["properties"] = {
        m: closed({d: closed(entry.hparam_properties()) for d in registry.DATASETS})
        for m, entry in registry.MODELS.items()
        if entry.hparam_properties()
    }
    return schema


def _where(path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _describe(error) -> str:
    where = _where(error.absolute_path)
    hint = error.schema.get("description") if isinstance(error.schema, dict) else None
    if error.validator == "enum":
        message = f"{error.instance!r} is not a known id; choose one of {', '.join(map(str, error.validator_value))}"
    elif error.validator == "additionalProperties":
        message = error.message + " (check the spelling of the key)"
    elif error.validator == "not":
        message = f"{error.instance!r} is not allowed: it holds what the key's description rules out"
    elif error.validator == "oneOf" and error.context:
        message = "; ".join(sorted({c.message for c in error.context}))
    else:
        message = error.message
    if _typed_string(error):
        message += f". {CONFIG_STRINGS_HINT}"
    return f"- {where}: {message}" + (f"\n    hint: {' '.join(hint.split())}" if hint else "")


# `snakemake --config 'train={mnist: {epochs: 5}}'` hands nested values over as strings ('5'), which
# the schema rejects in words that do not say why.
CONFIG_STRINGS_HINT = (
    "Snakemake's --config passes nested values as strings; put nested settings in a YAML file given with --configfile"
)
_JSON_TYPES = {"integer": (int,), "number": (int, float), "boolean": (bool,), "null": (type(None),)}


def _typed_string(error) -> bool:
    """A schema type error on a string that YAML reads as one of the wanted types ('5' for an integer)."""
    if error.validator != "type" or not isinstance(error.instance, str):
        return False
    wanted = error.validator_value if isinstance(error.validator_value, list) else [error.validator_value]
    try:
        parsed = yaml.safe_load(error.instance)
    except yaml.YAMLError:
        return False
    for name in wanted:
        types = _JSON_TYPES.get(name, ())
        if isinstance(parsed, types) and not (name != "boolean" and isinstance(parsed, bool)):
            return True
    return False


def validate_dict(raw: dict, source: str = "config") -> None:
    """Validate against the schema; raise ConfigError listing every problem."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(load_schema())
    errors = sorted(validator.iter_errors(raw), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        lines = "\n".join(_describe(e) for e in errors)
        raise ConfigError(f"invalid {source} ({len(errors)} problem{'s' * (len(errors) > 1)}):\n{lines}")


def check_paths(cfg: Config, base: Path | None = None, datasets=None) -> None:
    """Checks the schema cannot make: folders a config points at exist and have the right layout.

    Only for `datasets` (default: every configured one): a job checks the data it reads, so a paper
    config whose CelebA is not downloaded yet still runs its MNIST jobs. Called by the jobs that read
    those folders (not at workflow parse time, so that a dry run of the paper config works before
    CelebA is downloaded); the Snakefile only warns.
    """
    problems = []
    datasets = cfg.datasets if datasets is None else tuple(datasets)
    if "celeba" in datasets and "celeba" in cfg.datasets:
        problem = celeba_problem(cfg, base)
        if problem:
            problems.append(f"- {problem}")
    mnist = cfg.data.mnist
    if (
        "mnist" in datasets
        and mnist.local_copy is not None
        and not resolve_config_path(mnist.local_copy, base).is_dir()
    ):
        problems.append(f"- data.mnist.local_copy: {mnist.local_copy} is not a folder (set it to null to download)")
    if problems:
        raise ConfigError(f"invalid config {cfg.name!r}:\n" + "\n".join(problems))


# How to run the paper's MNIST half alone: said by the error, the workflow's warning and the README.
MNIST_ONLY_HINT = (
    "To run the paper's MNIST half meanwhile, add `--config 'datasets=[mnist]'` to the snakemake "
    "command (or `--configfile config/paper-mnist.yaml`)."
)


def celeba_problem(cfg: Config, base: Path | None = None) -> str | None:
    """Why CelebA cannot be read at data.celeba.root (None when it can, or a stand-in is generated)."""
    celeba = cfg.data.celeba
    if celeba.synthetic_standin is not None or celeba.root is None:
        return None
    root = resolve_config_path(celeba.root, base)
    from arelbo.core.layout import celeba_folder

    if celeba_folder(root) is not None:
        return None
    return (
        f"data.celeba.root: {root} does not hold img_align_celeba/ and list_eval_partition.txt "
        "(torchvision's CelebA layout, directly or under celeba/). Download them from the CelebA "
        "site (manual download, licence) or set data.celeba.synthetic_standin for a stand-in. " + MNIST_ONLY_HINT
    )


def resolve_config_path(path: str | Path, base: Path | None = None) -> Path:
    """Relative paths in a config are relative to the working directory (Snakemake's convention)."""
    path = Path(path)
    return path if path.is_absolute() else (base or Path.cwd()) / path


def _section3_problems(s3: Section3Config) -> list[str]:
    """What the schema cannot say: one-decimal grids, and figure points that are grid points."""
    problems = []
    grids = {
        "section3.table1.log10_sigma_x2": s3.table1.log10_sigma_x2,
        "section3.table5.log10_sigma_z2": s3.table5.log10_sigma_z2,
    }
    figs = s3.figures
    for key, values in {
        **grids,
        "section3.figures.figure1_log10_sigma_x2": figs.figure1_log10_sigma_x2,
        "section3.figures.figure2_log10_sigma_x2": figs.figure2_log10_sigma_x2,
        "section3.figures.figure3_log10_sigma_z2": figs.figure3_log10_sigma_z2,
    }.items():
        odd = [v for v in values if abs(v * 10 - round(v * 10)) > 1e-9]
        if odd:
            problems.append(
                f"  - {key}: {odd} are not multiples of 0.1 (grid points are named with one "
                "decimal, e.g. -0.3); round them"
            )
    for key, values, grid in (
        ("section3.figures.figure1_log10_sigma_x2", figs.figure1_log10_sigma_x2, s3.table1.log10_sigma_x2),
        ("section3.figures.figure2_log10_sigma_x2", figs.figure2_log10_sigma_x2, s3.table1.log10_sigma_x2),
        ("section3.figures.figure3_log10_sigma_z2", figs.figure3_log10_sigma_z2, s3.table5.log10_sigma_z2),
    ):
        missing = [v for v in values if not any(abs(v - g) < 1e-9 for g in grid)]
        if missing:
            problems.append(
                f"  - {key}: {missing} not in the trained grid {list(grid)}; a figure shows "
                "trained grid points only — add them to the grid or drop them here"
            )
    if "stochastic" not in s3.table1.encodings and figs.figure2_log10_sigma_x2:
        problems.append(
            "  - section3.figures.figure2_log10_sigma_x2: Figure 2 shows stochastic encodings, "
            "but section3.table1.encodings has no 'stochastic'; add it or set this to []"
        )
    return problems


# Folder keys normalised before use: `./results/x`, `results/x/` and `results/x` are one outdir
# (the DAG matches output paths as strings).
PATH_KEYS = ("outdir", "resources", "logdir")


# Characters refused in a folder key or the config's name, each with why. These values reach the jobs'
# shell commands (quoted there all the same), Snakemake's path patterns and the HTML report's scripts;
# spaces and non-ASCII letters are fine.
_REFUSED_IN_FOLDERS = {
    "$": "a shell expands it",
    "`": "a shell runs what it encloses",
    '"': "a shell quote",
    "'": "a shell quote",
    "\\": "a shell escape",
    "{": "Snakemake reads braces as a wildcard",
    "}": "Snakemake reads braces as a wildcard",
    "<": "the HTML report embeds paths in its <script> blocks",
    ">": "the HTML report embeds paths in its <script> blocks",
}
FOLDER_VALUE_KEYS = ("name", *PATH_KEYS)


def folder_value_problems(raw: dict) -> list[str]:
    """What makes `name` or a folder key (as written, before normalisation) unsafe as a path: a `..`
    component, the filesystem root, control characters (a line break ends a shell command) or a
    character of _REFUSED_IN_FOLDERS. One line per key, naming the value and the fix."""
    import unicodedata

    problems = []
    for key in FOLDER_VALUE_KEYS:
        value = raw.get(key)
        if not isinstance(value, str) or not value:
            continue  # the schema says what a missing or non-string value should be
        why = []
        controls = sorted({c for c in value if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp")})
        if controls:
            why.append("control characters " + ", ".join(f"U+{ord(c):04X}" for c in controls))
        why += [f"{c!r} ({reason})" for c, reason in _REFUSED_IN_FOLDERS.items() if c in value]
        if ".." in value.split("/"):
            why.append("a '..' component (it leaves the folder it names)")
        if key == "name" and set(value) == {"."}:
            why.append("nothing but dots (a folder reference, not a name)")
        elif (
            key != "name"
            and not controls
            and resolve_config_path(value).resolve().parent == resolve_config_path(value).resolve()
        ):
            why.append("the filesystem root itself (everything would be written there)")
        if why:
            # the value with what is refused left out, as an example of the fix
            if key == "name":
                allowed, example = (
                    "letters, digits and -_.",
                    "".join(c for c in value if c.isascii() and (c.isalnum() or c in "-_.")),
                )
            else:
                allowed = "letters, digits, spaces and -_.,+@ in its folder names"
                kept = "".join(c for c in value if c.isalnum() or c in " -_.,+@/")
                parts = kept.split("/")
                example = "/".join(p for i, p in enumerate(parts) if p.strip(".") or (i == 0 and not p)).strip()
            if not example.strip("/ ."):
                example = "mine" if key == "name" else "results"
            problems.append(
                f"- {key}: {value!r} holds {'; '.join(why)}. Use {allowed}, e.g. --config {key}={example!r}"
            )
    return problems


def _normalise_paths(raw: dict) -> dict:
    import os

    raw = copy.deepcopy(raw)
    for key in PATH_KEYS:
        if isinstance(raw.get(key), str) and raw[key].strip():
            raw[key] = os.path.normpath(raw[key])
    # `snakemake --config 'seeds=[0,1,2]'` hands the list's items over as strings: read integer ones
    if isinstance(raw.get("seeds"), list):
        raw["seeds"] = [int(s) if isinstance(s, str) and s.strip().lstrip("-").isdigit() else s for s in raw["seeds"]]
    return raw


def train_batch_problems(cfg: Config, dataset: str, n_train: int) -> list[str]:
    """A training set whose last minibatch holds one image: BatchNorm (in both Table 3 networks)
    cannot normalise a batch of one in training mode and the job would fail mid-epoch."""
    batch = getattr(cfg.train, dataset).batch_size
    if n_train % batch == 1:
        return [
            f"- train.{dataset}.batch_size={batch} with {n_train} training images leaves a last minibatch "
            f"of 1 image, which BatchNorm cannot train on; change data.{dataset}.limit.train or the "
            "batch size by one"
        ]
    return []


def _known_size_problems(cfg: Config) -> list[str]:
    """Checks that need the dataset sizes, where they are known without the data (MNIST: 60,000
    training images minus the validation split)."""
    if "mnist" not in cfg.datasets:
        return []
    n_train = 60000 - cfg.data.mnist.val_size
    if cfg.data.mnist.limit.train is not None:
        n_train = min(n_train, cfg.data.mnist.limit.train)
    return train_batch_problems(cfg, "mnist", n_train)


def load_config_plugins(raw: dict, source: str = "config") -> None:
    """Load the config's `plugins` and the installed `arelbo.plugins` entry points into
    arelbo.core.registry before validation, so their ids are known; a plugin that fails is named."""
    from arelbo.core.registry import PluginError
    from arelbo.core.registry import load_plugins as load

    names = raw.get("plugins") or []
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ConfigError(f"invalid {source}: `plugins` must be a list of module names, not {names!r}")
    try:
        load(names)
    except PluginError as error:
        raise ConfigError(f"invalid {source}: {error}") from None


def from_dict(raw: dict, source: str = "config", check_folders: bool = True, check_writable: bool = True) -> Config:
    """The typed config. `check_writable`: outdir and logdir must be folders this user can create or
    write (off for library calls that write nothing, e.g. `paper_config`)."""
    unsafe = folder_value_problems(raw)
    if unsafe:
        raise ConfigError(f"invalid {source} ({len(unsafe)} problem{'s' * (len(unsafe) > 1)}):\n" + "\n".join(unsafe))
    raw = _normalise_paths(raw)
    load_config_plugins(raw, source)
    validate_dict(raw, source)
    raw = _with_effective_hparams(raw)
    cfg = _build(Config, raw)
    problems = _section3_problems(cfg.section3) + [f"  {p}" for p in _known_size_problems(cfg)]
    if cfg.fid.uncertainty == "bootstrap" and cfg.fid.bootstrap_resamples < 2:
        problems.append(
            f"  - fid.bootstrap_resamples: {cfg.fid.bootstrap_resamples} cannot give a standard deviation; "
            "set at least 2, or fid.uncertainty: delta (one eigendecomposition) or none"
        )
    if problems:
        raise ConfigError(
            f"invalid {source} ({len(problems)} problem{'s' * (len(problems) > 1)}):\n" + "\n".join(problems)
        )
    if check_writable:
        unwritable = unwritable_folders(cfg)
        if unwritable:
            raise ConfigError(f"invalid {source}:\n" + "\n".join(unwritable))
    because = reduced_because(raw)
    # the flag can only add to what the sizes say: the paper's sizes flagged `reduced: true` stay reduced
    raw = {**raw, "reduced": bool(cfg.reduced or because)}
    if cfg.reduced and not because:
        because = ["the config says `reduced: true`"]
    cfg = dataclasses.replace(cfg, reduced=raw["reduced"], reduced_because=tuple(because), raw=copy.deepcopy(raw))
    if check_folders:
        check_paths(cfg)
    return cfg


def unwritable_folders(cfg: Config) -> list[str]:
    """outdir and logdir must be folders this user can write, or create: found before any work
    (a dry run included) instead of as a stack trace from the first job or Snakemake's file scan."""
    problems = []
    for key in ("outdir", "logdir"):
        why = unwritable_reason(resolve_config_path(getattr(cfg, key)))
        if why:
            problems.append(
                f"- {key}: {getattr(cfg, key)} cannot be written: {why}. Point `{key}` at a folder you can "
                "write (e.g. --config " + key + "=results/mine)."
            )
    return problems


def unwritable_reason(folder: Path) -> str | None:
    """Why this user cannot write in `folder` or create it (None when it can), without writing there
    when it exists."""
    import os
    import tempfile

    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is a file, not a folder"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{existing} is not writable by this user"
    if existing != folder:
        # the folder is to be created: try it (root passes os.access where the kernel refuses, /proc)
        try:
            os.rmdir(tempfile.mkdtemp(prefix=".arelbo-write-check-", dir=existing))
        except OSError as error:
            return f"cannot create a folder in {existing} ({error.strerror or error})"
    return None


# The settings that make the paper's protocol, each at its value in config/config.yaml: what is trained
# on, for how long, and on how many images a metric is computed (a null limit: the whole split). A
# config with any below the paper's is reduced whatever its `reduced` says (its numbers are not
# comparable with the paper's), so tables, captions and claims follow from the settings themselves.
# Which datasets, models, estimators or grid points run is not a size: each number that is computed
# is computed as the paper's.
PAPER_PROTOCOL_SIZES = (
    "train.mnist.epochs",
    "train.celeba.epochs",
    "second_stage.epochs",
    "data.mnist.limit.train",
    "data.mnist.limit.val",
    "data.mnist.limit.test",
    "data.celeba.limit.train",
    "data.celeba.limit.val",
    "data.celeba.limit.test",
    "fid.n_samples",
    "fid.reference_count",
    "section3.train.epochs",
    "section3.train_limit",
)


def reduced_because(raw: dict) -> list[str]:
    """'<key>=<value> (paper: <value>)' for each PAPER_PROTOCOL_SIZES setting of the merged config
    `raw` that is below config/config.yaml's (settings of a dataset it does not run are skipped;
    Section 3 runs with MNIST)."""
    paper, datasets = _paper_raw(), set(raw.get("datasets") or ())
    out = []
    for key in PAPER_PROTOCOL_SIZES:
        parts = key.split(".")
        needs = next((p for p in parts if p in ("mnist", "celeba")), "mnist" if parts[0] == "section3" else None)
        if needs is not None and needs not in datasets:
            continue
        ours, theirs = _dotted(raw, parts), _dotted(paper, parts)
        if ours is None:  # the whole split / the paper's count
            continue
        if theirs is None or ours < theirs:
            out.append(f"{key}={ours} (paper: {'all' if theirs is None else theirs})")
    return out


def _dotted(tree, parts):
    for part in parts:
        tree = tree.get(part) if isinstance(tree, dict) else None
    return tree


def _with_effective_hparams(raw: dict) -> dict:
    """`hparams` as the run uses them: each model's registry defaults (the paper's values, kept with
    the model as in the paper's Table 2), overridden by the config's `hparams.<model>.<dataset>`. The
    resolved config the jobs read, and `arelbo config`, show these values."""
    from arelbo.core import registry

    given = raw.get("hparams") or {}
    effective = {}
    for model_id, entry in registry.MODELS.items():
        per_dataset = {d: entry.hparams(d, (given.get(model_id) or {}).get(d)) for d in registry.DATASETS}
        if any(per_dataset.values()):
            effective[model_id] = per_dataset
    return {**raw, "hparams": effective}


@functools.cache
def paper_config() -> Config:
    """config/config.yaml alone, typed: the paper's settings, for library calls made without a config
    (e.g. a second-stage fit given no settings)."""
    return from_dict(
        read_yaml(clone_file(DEFAULT_CONFIG)), source=str(DEFAULT_CONFIG), check_folders=False, check_writable=False
    )


def load_config(
    *paths: str | Path, overrides: dict | None = None, with_defaults: bool = True, check_folders: bool = True
) -> Config:
    """config/config.yaml (the paper's settings) merged with each file of `paths`, then `overrides`."""
    raw: dict[str, Any] = read_yaml(clone_file(DEFAULT_CONFIG)) if with_defaults else {}
    for p in paths:
        if with_defaults and Path(p).resolve() == DEFAULT_CONFIG.resolve():
            continue
        raw = deep_merge(raw, read_yaml(p))
    if overrides:
        raw = deep_merge(raw, overrides)
    source = " + ".join(str(p) for p in paths) or str(DEFAULT_CONFIG)
    return from_dict(raw, source=f"config ({source})", check_folders=check_folders)


def recorded(value):
    """A setting as a rule records it for Snakemake (workflow/rules/common.smk, `tracked`), with every
    '<' in a string written as the six characters \\u003c. Snakemake's HTML report embeds each
    reported output's params as raw JSON inside a <script> block, where a '</script>' in a setting (a
    folder name, say) would end the script and let the rest run as HTML. A value without '<' is
    recorded as it is, so the records of existing outputs stay valid."""
    if isinstance(value, str):
        return value.replace("<", "\\u003c")
    if isinstance(value, dict):
        return {key: recorded(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(recorded(item) for item in value)
    return value


def dump_config(cfg: Config) -> str:
    """The merged config as YAML, its keys in config/config.yaml's order (keys it lacks, e.g. a
    plugin's, after them in their own order): the same settings give the same text, whichever order
    the overlays were merged in (`snakemake --configfile A B` puts the overlays' keys first), so the
    content-addressed file the jobs read (arelbo.core.layout.resolved_config) is one per config."""
    return yaml.safe_dump(_in_base_order(cfg.raw, _base_key_order()), sort_keys=False)


@functools.cache
def _paper_raw() -> dict:
    """config/config.yaml as read: the paper's settings, and the key order of a dumped config."""
    return read_yaml(DEFAULT_CONFIG)


def _base_key_order() -> dict:
    return _paper_raw()


def _in_base_order(tree, order):
    if not isinstance(tree, dict):
        return tree
    order = order if isinstance(order, dict) else {}
    keys = [k for k in order if k in tree] + [k for k in tree if k not in order]
    return {k: _in_base_order(tree[k], order.get(k)) for k in keys}
