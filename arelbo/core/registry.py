"""Every id arelbo knows, in one place: the datasets, the models of Tables 3 and 4 (the paper's 13,
side by side like its Table 2, then any plugin's), the posterior estimators, and how plugins add to
them. The config schema's enums, the CLI's choices, the Snakefile's wildcard constraints and the
table layouts all read this module; no other id list exists.

Torch-free: the Snakefile reads it at parse time. A model's objective is named by import path
("module:function", with fixed keyword arguments) and imported only when a training needs it.

Plugins (docs/extending.md). A plugin is an importable module with a function
`register(registry)` that calls `registry.add_model(...)` / `registry.add_estimator(...)` and
declares `ARELBO_PLUGIN_API = 1`. It is loaded from the config key `plugins: [module, ...]` or from
the Python entry-point group `arelbo.plugins` of an installed package. The built-in models and
estimators are registered through the same two functions.
"""

from __future__ import annotations

import importlib
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

PLUGIN_API = 1
ENTRY_POINT_GROUP = "arelbo.plugins"
DATASETS = ("mnist", "celeba")
DECODER_VARIANCES = ("iso_i", "diag_i", "iso_d", "diag_d")
AR_EPS = 1e-6  # Section 4.2: added to the AR-ELBO's residuals before the log (not for Iso-I)
INTERPOLATION_SAMPLERS = ("interp_mid", "interp_random")
_ID = re.compile(r"^[a-z][a-z0-9_]*$")


class PluginError(ValueError):
    """A plugin that cannot be imported or registers something invalid (names the module)."""


@dataclass(frozen=True)
class ModelEntry:
    """One row of Tables 3 and 4: how to build its network and which objective trains it.

    objective: "module:function" called as function(x, out, net, **objective_kwargs, **hparams) ->
    (loss, terms) (arelbo.models.objectives' signature). `defaults`: dataset -> hyper-parameters, which a
    config's `hparams.<model>.<dataset>` overrides key by key."""

    id: str
    label: str
    objective: str
    stochastic: bool  # the encoder gives (mu, log sigma^2) and z is sampled
    decoder_variance: str | None  # the Sigma_x model the *net* carries (None: fixed or absent)
    has_prior: bool  # False where sampling from N(0, I) is undefined ("–" in Table 3)
    defaults: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    objective_kwargs: Mapping[str, Any] = field(default_factory=dict)
    # JSON schema of each hyper-parameter a config may set (hparams.<model>.<dataset>.<name>);
    # empty: every name in `defaults`, a number >= 0
    hparams_schema: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    estimates_sigma_x: bool = False  # Sigma_x is learned or estimated (not fixed to I or absent)
    bf16_safe: bool = True  # whether train.<dataset>.precision: bf16 applies (nets.VAE)
    # whether it may train with TF32 convolutions on CUDA (train.<dataset>.precision: tf32 or bf16;
    # arelbo.core.precision); arelbo.testing.check_model holds a True to the evidence
    tf32_safe: bool = True
    validation_needs_grad: bool = False  # the objective differentiates inside (RAE-GP's penalty)
    paper: bool = False  # a row of the paper's tables (False: "not in the paper")
    source: str = "arelbo"  # the module that registered it

    def objective_fn(self) -> Callable:
        """The objective with its fixed keyword arguments bound (imports its module)."""
        from functools import partial

        fn = import_by_path(self.objective, f"model {self.id!r}")
        return partial(fn, **self.objective_kwargs) if self.objective_kwargs else fn

    def hparams(self, dataset: str, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
        return {**self.defaults.get(dataset, {}), **(overrides or {})}

    def hparam_properties(self) -> dict[str, Any]:
        if self.hparams_schema:
            return {k: dict(v) for k, v in self.hparams_schema.items()}
        names = dict.fromkeys(k for per_dataset in self.defaults.values() for k in per_dataset)
        return {k: {"type": "number", "minimum": 0} for k in names}


@dataclass(frozen=True)
class EstimatorEntry:
    """A posterior estimator q(z): fitted on a model's training latents, sampled to generate.

    fit: "module:function" called as function(mu, logvar, *, seed, settings, device, progress) ->
    an arelbo.models.estimators.Estimator (`id`, `d_z`, `sample(n, seed)` -> float32 n×d_z CPU tensor,
    `payload()` -> a dict of plain types and numpy arrays); mu is N×d_z, logvar the same or None
    for a deterministic encoder; settings the config's `estimator_settings.<id>` (a dict).
    load: "module:function" called as function(payload, device) -> the same Estimator again.
    `columns`: the datasets whose Table 3 has it as a column."""

    id: str
    label: str
    fit: str
    load: str
    columns: tuple[str, ...] = DATASETS
    needs_prior: bool = False  # sampled through the prior N(0, I): only models that define it
    # its samples are drawn with seed 1000·(run seed) + seed_offset (evaluate.sampler_seed); None:
    # derived from the id (a plugin's), stable whatever other plugins are loaded
    seed_offset: int | None = None
    paper: bool = False
    source: str = "arelbo"

    def fit_fn(self) -> Callable:
        return import_by_path(self.fit, f"estimator {self.id!r}")

    def load_fn(self) -> Callable:
        return import_by_path(self.load, f"estimator {self.id!r}")


def import_by_path(path: str, what: str) -> Callable:
    module_name, _, name = path.partition(":")
    try:
        return getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError) as error:
        raise PluginError(f"{what}: cannot import {path!r} ({type(error).__name__}: {error})") from error


# ---------------------------------------------------------------------------- the tables

MODELS: dict[str, ModelEntry] = {}
ESTIMATORS: dict[str, EstimatorEntry] = {}
_LOADED: dict[str, str] = {}  # plugin module -> where it was named (config / entry point)
_LOCK = threading.RLock()  # re-entrant: a plugin may load another it builds on


def add_model(entry: ModelEntry) -> ModelEntry:
    """Register one model (built-in or plugin); refuses an id that exists or a malformed entry."""
    problems = []
    if not _ID.match(entry.id):
        problems.append(f"id {entry.id!r} must be lower-case letters, digits and _, starting with a letter")
    if entry.id in MODELS and MODELS[entry.id] != entry:
        problems.append(f"id {entry.id!r} is already registered by {MODELS[entry.id].source}")
    if ":" not in entry.objective:
        problems.append(f"objective {entry.objective!r} must be 'module:function'")
    if entry.decoder_variance not in (None, *DECODER_VARIANCES):
        problems.append(f"decoder_variance {entry.decoder_variance!r} must be one of {DECODER_VARIANCES} or None")
    unknown = set(entry.defaults) - set(DATASETS)
    if unknown:
        problems.append(f"defaults for unknown datasets {sorted(unknown)} (known: {', '.join(DATASETS)})")
    for name in ("stochastic", "has_prior", "bf16_safe", "tf32_safe"):
        if not isinstance(getattr(entry, name), bool):
            problems.append(f"{name} must be True or False, not {getattr(entry, name)!r}")
    if not entry.label:
        problems.append("label (the table row's name) must not be empty")
    if problems:
        raise PluginError(f"model {entry.id!r} from {entry.source}: " + "; ".join(problems))
    MODELS[entry.id] = entry
    return entry


def add_estimator(entry: EstimatorEntry) -> EstimatorEntry:
    problems = []
    if not re.match(r"^[a-z0-9]+$", entry.id):
        # no "_" or "-": an estimator id is a sampler wildcard and a metric suffix (fid_<id>)
        problems.append(f"id {entry.id!r} must be lower-case letters and digits only")
    if entry.id in ESTIMATORS and ESTIMATORS[entry.id] != entry:
        problems.append(f"id {entry.id!r} is already registered by {ESTIMATORS[entry.id].source}")
    if entry.id.startswith("interp") or entry.id in MODELS:
        problems.append(f"id {entry.id!r} is taken by a sampler or a model")
    for name in ("fit", "load"):
        if ":" not in getattr(entry, name):
            problems.append(f"{name} {getattr(entry, name)!r} must be 'module:function'")
    if set(entry.columns) - set(DATASETS):
        problems.append(f"columns {sorted(set(entry.columns) - set(DATASETS))} are not datasets")
    if problems:
        raise PluginError(f"estimator {entry.id!r} from {entry.source}: " + "; ".join(problems))
    ESTIMATORS[entry.id] = entry
    return entry


class _Api:
    """What a plugin's register() is given: the two registration functions and the entry types,
    with `source` filled in so every row says where it came from."""

    PLUGIN_API = PLUGIN_API
    DATASETS = DATASETS
    ModelEntry = ModelEntry
    EstimatorEntry = EstimatorEntry

    def __init__(self, source: str):
        self.source = source

    def add_model(self, **fields) -> ModelEntry:
        return add_model(ModelEntry(**{**fields, "paper": False, "source": self.source}))

    def add_estimator(self, **fields) -> EstimatorEntry:
        return add_estimator(EstimatorEntry(**{**fields, "paper": False, "source": self.source}))


# ---------------------------------------------------------------------------- the paper's rows (Table 2)


def _builtins() -> None:
    o = "arelbo.models.objectives:"
    both = lambda **h: {"mnist": h, "celeba": h}  # noqa: E731
    eps = both(eps=AR_EPS)
    ar = lambda v: {"variance": v}  # noqa: E731
    rows = (
        #          id                  label                      objective          stoch  Σx        prior  defaults
        ModelEntry("vae", "VAE (σx² = 1.0)", o + "negative_elbo", True, None, True),
        ModelEntry(
            "wae_mmd",
            "WAE-MMD",
            o + "wae_mmd",
            False,
            None,
            True,
            {"mnist": {"lambda_mmd": 10.0}, "celeba": {"lambda_mmd": 100.0}},
        ),
        ModelEntry("ae", "AE", o + "ae", False, None, False),
        ModelEntry("rae", "RAE", o + "rae", False, None, False, both(beta=1e-4, lambda_dec=1e-7)),
        ModelEntry(
            "rae_gp",
            "RAE-GP",
            o + "rae_gp",
            False,
            None,
            False,
            {"mnist": {"beta": 1e-4, "lambda_gp": 0.5e-7}, "celeba": {"beta": 1e-4, "lambda_gp": 1e-7}},
            validation_needs_grad=True,
        ),  # its penalty differentiates the decoder w.r.t. z
        ModelEntry("iso_i_trainable", "Iso-I w/ trainable Σx", o + "negative_elbo", True, "iso_i", True),
        ModelEntry("diag_i_trainable", "Diag-I w/ trainable Σx", o + "negative_elbo", True, "diag_i", True),
        ModelEntry("iso_d_trainable", "Iso-D w/ trainable Σx", o + "negative_elbo", True, "iso_d", True),
        ModelEntry("diag_d_trainable", "Diag-D w/ trainable Σx", o + "negative_elbo", True, "diag_d", True),
        ModelEntry("iso_i_arelbo", "Iso-I w/ AR-ELBO", o + "ar_elbo", True, None, True, objective_kwargs=ar("iso_i")),
        ModelEntry(
            "diag_i_arelbo", "Diag-I w/ AR-ELBO", o + "ar_elbo", True, None, True, eps, objective_kwargs=ar("diag_i")
        ),
        ModelEntry(
            "iso_d_arelbo", "Iso-D w/ AR-ELBO", o + "ar_elbo", True, None, True, eps, objective_kwargs=ar("iso_d")
        ),
        # Not in bf16 nor TF32: its per-pixel ½·ln((x−μ)² + ε) has the gradient (μ−x)/((x−μ)² + ε), which
        # a rounding of μ turns around where residuals are small. Gradient cosine against IEEE FP32 on
        # MNIST batches: ~0.2 with a bf16 trunk, 0.88 and 0.99 with TF32 convolutions (simulated; every
        # other model ≥ 0.999) — docs/engineering-notes.md, "Precision measurements".
        ModelEntry(
            "diag_d_arelbo",
            "Diag-D w/ AR-ELBO",
            o + "ar_elbo",
            True,
            None,
            True,
            eps,
            objective_kwargs=ar("diag_d"),
            bf16_safe=False,
            tf32_safe=False,
        ),
    )
    for row in rows:
        # Σx is learned (a trainable variance) or estimated (AR-ELBO's minibatch MLE)
        learned = row.decoder_variance is not None or row.objective.endswith(":ar_elbo")
        add_model(ModelEntry(**{**row.__dict__, "estimates_sigma_x": learned, "paper": True}))
    e = "arelbo.models.estimators:"
    for entry in (
        #              id        label      fit                     load                  Table 3 columns
        EstimatorEntry("prior", "prior", e + "fit_prior", e + "load_prior", DATASETS, True, seed_offset=1),
        EstimatorEntry("2ndvae", "2ndVAE", e + "fit_2ndvae", e + "load_2ndvae", DATASETS, False, seed_offset=2),
        EstimatorEntry("gmm10", "GMM-10", e + "fit_gmm10", e + "load_gmm", DATASETS, False, seed_offset=3),
        EstimatorEntry(
            "gmm100", "GMM-100", e + "fit_gmm100", e + "load_gmm", ("celeba",), False, seed_offset=4
        ),  # docs/design.md §7
    ):
        add_estimator(EstimatorEntry(**{**entry.__dict__, "paper": True}))


_builtins()


# ---------------------------------------------------------------------------- plugins


def load_plugin(module_name: str, where: str = "config `plugins`") -> None:
    """Import plugin `module_name` and run its register(); once per process."""
    with _LOCK:
        if module_name in _LOADED:
            return
        try:
            module = importlib.import_module(module_name)
        except Exception as error:  # a plugin's own import error, whatever it is, named with the module
            raise PluginError(
                f"plugin {module_name!r} (from {where}) failed to import: {type(error).__name__}: {error}"
            ) from error
        api = getattr(module, "ARELBO_PLUGIN_API", None)
        if api != PLUGIN_API:
            raise PluginError(
                f"plugin {module_name!r} (from {where}) declares ARELBO_PLUGIN_API = {api!r}; this "
                f"arelbo implements plugin API {PLUGIN_API} (docs/extending.md)"
            )
        register = getattr(module, "register", None)
        if not callable(register):
            raise PluginError(f"plugin {module_name!r} (from {where}) has no register(registry) function")
        before = (dict(MODELS), dict(ESTIMATORS))
        try:
            register(_Api(module_name))
        except PluginError:
            MODELS.clear(), MODELS.update(before[0]), ESTIMATORS.clear(), ESTIMATORS.update(before[1])
            raise
        except Exception as error:
            MODELS.clear(), MODELS.update(before[0]), ESTIMATORS.clear(), ESTIMATORS.update(before[1])
            raise PluginError(
                f"plugin {module_name!r} (from {where}): register() failed: {type(error).__name__}: {error}"
            ) from error
        _LOADED[module_name] = where


def load_plugins(modules=(), entry_points: bool = True) -> None:
    """The config's `plugins` modules, then (with `entry_points`) every installed package's
    `arelbo.plugins` entry points."""
    for name in modules:
        load_plugin(name)
    if entry_points:
        from importlib.metadata import entry_points as installed

        for ep in installed(group=ENTRY_POINT_GROUP):
            load_plugin(
                ep.value.partition(":")[0], where=f"entry point {ep.name!r} of {ep.dist.name if ep.dist else '?'}"
            )


# ---------------------------------------------------------------------------- views the rest reads


def model_ids() -> tuple[str, ...]:
    """The paper's 13 in Table 2's order, then plugins' in registration order."""
    return tuple(MODELS)


def paper_model_ids() -> tuple[str, ...]:
    return tuple(m for m, e in MODELS.items() if e.paper)


def no_prior_models() -> tuple[str, ...]:
    return tuple(m for m, e in MODELS.items() if not e.has_prior)


def estimator_ids() -> tuple[str, ...]:
    return tuple(ESTIMATORS)


def table3_estimators(dataset: str) -> tuple[str, ...]:
    """Table 3's estimator columns of a dataset (docs/design.md §7: GMM-100 for CelebA only)."""
    return tuple(e for e, entry in ESTIMATORS.items() if dataset in entry.columns)


def sampler_ids() -> tuple[str, ...]:
    return (*ESTIMATORS, *INTERPOLATION_SAMPLERS)


# The two interpolation samplers share one stream on purpose: the same test pairs
# (interpolation_latents draws the pairs first, then t for "random"), so Table 4's two columns
# differ only in t.
INTERPOLATION_SEED_OFFSET = 5


def sampler_seed_offset(sampler: str) -> int:
    """Each sampler draws from its own stream, 1000·(run seed) + this offset: the paper's estimators
    1–4, the interpolations 5, a plugin's estimator a number in 6..999 derived from its id (crc32)."""
    import zlib

    if sampler in INTERPOLATION_SAMPLERS:
        return INTERPOLATION_SEED_OFFSET
    entry = ESTIMATORS[sampler]
    if entry.seed_offset is not None:
        return entry.seed_offset
    return 6 + zlib.crc32(sampler.encode()) % 994
