"""The paper's Tables 1, 3, 4 and 5 from tidy evaluation records (docs/design.md §7). No torch import: table
assembly runs as a light local job.

Tidy data: one row per table × key × seed × metric, columns `table, dataset, seed, metric, value
(float, NaN allowed), config, commit` plus the table's keys: `model` (Tables 3, 4), `encoding` and
`log10_sigma_x2` (Table 1), `log10_sigma_z2` (Table 5), and, when the records have them, EXTRA_COLUMNS:
the value's within-run uncertainty, the sizes it was measured on (N generated / reference) and its
provenance. `check_tidy` validates and canonicalises it. Tables 3 and 4 also carry KID next to every FID
(shown ×10³ in a second LaTeX table and in the paper-shaped CSV) and Table 3 the σx² of the models that
estimate Σx; arelbo.reporting.claims judges the paper's claims from these tidy rows.

Cells. The mean over the seeds with a non-NaN value; "mean ± std" (std with ddof=1) when there are
two or more; "–" where the paper leaves the cell undefined (prior FID of AE, RAE, RAE-GP) or no seed
has a value. Tables 3 and 4 set the lowest mean of each column (per dataset) in bold, as the paper
does; ties are judged on the printed numbers, so every cell that reads as the minimum is bold.

Numbers (`format_number`). Zero and 1 <= |x| < 10^4 get two decimals (20.25, 0.00, 1.02), as the
paper's MSE/FID columns; every other value gets three significant digits in compact scientific
notation (6.31e-5, 9.56e-2, 1.08e-1, 2.50e+4), as its σz², gap and ELS columns. A std is printed at
its mean's precision: two decimals next to a two-decimal mean, scientific next to a scientific one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from arelbo.core import registry
from arelbo.core.layout import reference_file
from arelbo.core.provenance import PROVENANCE_COLUMNS
from arelbo.core.runtime import atomic_write_bytes

# The rows of Tables 3 and 4 (the paper's 13 in its order, then plugins'), their labels, and the
# estimator columns come from arelbo.core.registry; DATASETS too.
DATASETS = registry.DATASETS
ENCODINGS = ("stochastic", "deterministic")
FLOAT_KEYS = ("log10_sigma_x2", "log10_sigma_z2")
KEY_COLUMNS = ("dataset", "model", "encoding", *FLOAT_KEYS)
BASE_COLUMNS = ("table", "dataset", "seed", "metric", "value", "config", "commit")
TIDY_COLUMNS = ("table", *KEY_COLUMNS, "seed", "metric", "value", "config", "commit")
# Kept when the records have them: the value's within-run uncertainty (a std: FID delta method, KID
# subsets, standard error over images) and how it was estimated, the sizes it was measured on, and its
# provenance (the arithmetic included).
EXTRA_COLUMNS = (
    "uncertainty",
    "uncertainty_method",
    "converged",
    "convergence",
    "epochs_trained",
    "objective_change",
    "kl_collapsed",
    "second_stage_converged",  # the 2nd-VAE sampler's rows: its second stage's own diagnostics
    "second_stage_epochs",
    "second_stage_objective_change",
    "n_samples",
    "n_reference",
    "kid_subset_size",
    "n_images",
    "reduced",
    "reduced_because",  # the settings below the paper's (arelbo.core.config.reduced_because)
    *(c for c in PROVENANCE_COLUMNS if c not in TIDY_COLUMNS),
)
KID_SCALE = 1e3  # KID is shown ×10³, as is customary
DASH = "–"
CSV_FLOAT_FORMAT = "%.10g"

_TEX_LABELS = {
    "mnist": "MNIST",
    "celeba": "CelebA",
    "stochastic": "Stochastic encoding",
    "deterministic": "Deterministic encoding",
    "model": "Model",
    "log10_sigma_x2": r"$\log_{10}\sigma_x^2$",
    "log10_sigma_z2": r"$\log_{10}\sigma_z^2$",
    "mse": "MSE",
    "kl": "KL",
    "sigma_z2": r"$\sigma_z^2$",
    "mi": "MI",
    "els": "ELS",
    "gap_1e-2": r"Gap $10^{-2}$",
    "gap_1e-3": r"Gap $10^{-3}$",
    "fid_interp_mid": "FID mid-point",
    "fid_interp_random": "FID random-point",
    "kid_interp_mid": "KID mid-point",
    "kid_interp_random": "KID random-point",
    "sigma_x2": r"$\sigma_x^2$",
}


def tex_labels() -> dict[str, str]:
    """LaTeX header of every key and metric; an estimator's FID/KID columns are named by its label."""
    labels = dict(_TEX_LABELS)
    for e, entry in registry.ESTIMATORS.items():
        labels[f"fid_{e}"], labels[f"kid_{e}"] = f"FID {tex_escape(entry.label)}", f"KID {tex_escape(entry.label)}"
    return labels


def model_label(model_id: str) -> str:
    """The row name of a model in Tables 3 and 4 (the paper's, or the plugin's `label`)."""
    return registry.MODELS[model_id].label


def _log10_grid(top: float, steps: int) -> tuple[float, ...]:
    return tuple(round(top - 0.1 * i, 1) + 0.0 for i in range(steps + 1))  # + 0.0: no -0.0


@dataclass(frozen=True)
class TableSpec:
    number: int
    title: str  # caption text (LaTeX) saying what the table shows
    datasets: tuple[str, ...]  # datasets its tidy rows may have
    row: str  # tidy column whose values are the rows
    rows: tuple  # the paper's rows, in its order
    columns: Mapping[str | None, tuple[str, ...]]  # column block -> the paper's displayed metrics
    group: str | None = None  # tidy column whose values are the column blocks
    metrics: tuple[str, ...] = ()  # every metric the tidy rows may have, display order
    bold_best: bool = False  # lowest mean per column in bold
    undefined: frozenset = field(default_factory=frozenset)  # (row, metric) cells left "–"

    @property
    def keys(self) -> tuple[str, ...]:
        return (self.group, self.row) if self.group else (self.row,)

    @property
    def groups(self) -> tuple:
        return tuple(self.columns)

    def rank(self, col: pd.Series) -> pd.Series:
        """Sort key of a column: paper order for blocks, models and metrics; log10 σ² descending."""
        if col.name == self.group:
            return col.map({g: i for i, g in enumerate(self.groups)})
        if col.name == "model":
            return col.map({m: i for i, m in enumerate(registry.model_ids())})
        if col.name == "metric":
            return col.map({m: i for i, m in enumerate(self.metrics)})
        return -col if col.name in FLOAT_KEYS else col

    def sort(self, df: pd.DataFrame, *then: str) -> pd.DataFrame:
        """`df` sorted by the keys it has, then by `then`."""
        by = [c for c in self.keys if c in df] + list(then)
        return df.sort_values(by, key=self.rank, ignore_index=True)


_T4 = tuple(f"fid_{s}" for s in registry.INTERPOLATION_SAMPLERS)


def kid_of(metric: str) -> str:
    """The KID metric measured with the same samples as FID metric `metric`."""
    return "kid_" + metric.removeprefix("fid_")


def _table3_columns(dataset: str) -> tuple[str, ...]:
    # MSE, then one FID per estimator that is a Table 3 column of the dataset (docs/design.md §7: GMM-100 for CelebA)
    return ("mse", *(f"fid_{e}" for e in registry.table3_estimators(dataset)))


_T1 = ("mse", "kl", "sigma_z2", "mi", "gap_1e-2", "gap_1e-3", "els")
_T5 = ("mse", "kl", "mi", "gap_1e-2", "gap_1e-3", "els")


def _table_spec(n: int) -> TableSpec:
    """Table n's layout. Tables 3 and 4 are built from the registry when asked for, so a plugin's
    models (rows after the paper's) and estimators (columns after the paper's) are in them."""
    models = registry.model_ids()
    if n == 1:
        return TableSpec(
            1,
            r"MSE, KL divergence, converged $\sigma_z^2$, upper bound of the MI $I(x'; z)$, "
            r"expected gap (perturbation variance $s_z^2 = 10^{-2}, 10^{-3}$) and expected local "
            r"smoothness (ELS) for different $\sigma_x^2$",
            ("mnist",),
            "log10_sigma_x2",
            _log10_grid(0.0, 10),
            {"stochastic": _T1, "deterministic": ("mse", "mi", "gap_1e-2", "gap_1e-3", "els")},
            group="encoding",
            metrics=_T1,
        )
    if n == 3:
        columns = {d: _table3_columns(d) for d in DATASETS}
        fids = tuple(dict.fromkeys(m for cols in columns.values() for m in cols[1:]))
        # Not displayed in the paper's layout but carried by the tidy rows: KID next to every FID, and
        # the σx² the Σx-estimating models imply (the paper's 0.0056 / 0.0050 for Iso-I AR-ELBO).
        extra = ("sigma_x2", *(kid_of(m) for m in fids))
        through_prior = [e for e, entry in registry.ESTIMATORS.items() if entry.needs_prior]
        return TableSpec(
            3,
            "reconstruction MSE on the test set and FID of samples generated from the prior, a "
            "second-stage VAE (2ndVAE) and Gaussian mixtures with 10 and 100 components (GMM) "
            "fitted to the latent codes",
            DATASETS,
            "model",
            models,
            columns,
            group="dataset",
            metrics=("mse", *fids, *extra),
            bold_best=True,
            undefined=frozenset((m, f"fid_{e}") for m in registry.no_prior_models() for e in through_prior),
        )
    if n == 4:
        return TableSpec(
            4,
            "FID of images decoded from interpolated latent codes of image pairs, at the "
            "mid-point and at a random point between the two",
            DATASETS,
            "model",
            models,
            {d: _T4 for d in DATASETS},
            group="dataset",
            metrics=_T4 + tuple(kid_of(m) for m in _T4),
            bold_best=True,
        )
    if n == 5:
        return TableSpec(
            5,
            r"MSE, KL divergence, upper bound of the MI $I(x'; z)$, expected gap ($s_z^2 = "
            r"10^{-2}, 10^{-3}$) and ELS for different fixed $\sigma_z^2$ ($\Sigma_x$ by Iso-I AR-ELBO)",
            ("mnist",),
            "log10_sigma_z2",
            _log10_grid(1.0, 20),
            {None: _T5},
            metrics=_T5,
        )
    raise KeyError(n)


class _TableSpecs(Mapping):
    """The paper's four tables by number (1, 3, 4, 5), each TableSpec built from the registry as it is now."""

    NUMBERS = (1, 3, 4, 5)

    def __getitem__(self, n) -> TableSpec:
        if n not in self.NUMBERS:
            raise KeyError(n)
        return _table_spec(n)

    def __iter__(self):
        return iter(self.NUMBERS)

    def __len__(self) -> int:
        return len(self.NUMBERS)


TABLE_SPECS: Mapping[int, TableSpec] = _TableSpecs()


def _spec(n: int) -> TableSpec:
    if n not in TABLE_SPECS:
        raise ValueError(f"unknown table {n!r}; the paper's tables are {sorted(TABLE_SPECS)}")
    return TABLE_SPECS[n]


def kid_view(spec: TableSpec) -> TableSpec | None:
    """Table n's KID twin: its FID columns as KID (None for tables without FID)."""
    import dataclasses

    columns = {g: tuple(kid_of(m) for m in cols if m.startswith("fid_")) for g, cols in spec.columns.items()}
    if not any(columns.values()):
        return None
    return dataclasses.replace(spec, columns=columns, undefined=frozenset((r, kid_of(m)) for r, m in spec.undefined))


# ---------------------------------------------------------------------------- input


def check_tidy(tidy: pd.DataFrame) -> pd.DataFrame:
    """A validated copy of `tidy` with TIDY_COLUMNS (extra columns dropped), typed, float keys
    rounded to 6 decimals, rows sorted in paper order; ValueError naming what is wrong."""
    missing = [c for c in BASE_COLUMNS if c not in tidy.columns]
    if missing:
        raise ValueError(f"tidy data lacks required column(s): {', '.join(missing)}")
    df = tidy.reindex(columns=list(TIDY_COLUMNS) + [c for c in EXTRA_COLUMNS if c in tidy.columns])
    numbers = pd.to_numeric(df["table"], errors="coerce")
    unknown = sorted(set(df["table"][~numbers.isin(list(TABLE_SPECS))].astype(str)))
    if unknown:
        raise ValueError(f"unknown table number(s) {unknown}; the paper's tables are {sorted(TABLE_SPECS)}")
    df["table"] = numbers.astype(int)
    parts = [_check_table(part, TABLE_SPECS[n]) for n, part in df.groupby("table")]
    return pd.concat(parts, ignore_index=True) if parts else df


def _check_table(part: pd.DataFrame, spec: TableSpec) -> pd.DataFrame:
    def fail(message: str):
        raise ValueError(f"Table {spec.number}: {message}")

    def known(column: str, allowed: Iterable):
        unknown = sorted(set(part[column]) - set(allowed))
        if unknown:
            fail(f"unknown {column} value(s) {unknown}; expected one of {list(allowed)}")

    required = [c for c in dict.fromkeys((*BASE_COLUMNS, *spec.keys)) if c != "value"]
    empty = [c for c in required if part[c].isna().any()]
    if empty:
        fail(f"column(s) {', '.join(empty)} missing or empty")
    part = part.copy()
    for column in ("dataset", "metric", "config", "commit", *(k for k in spec.keys if k not in FLOAT_KEYS)):
        part[column] = part[column].astype(str)
    known("dataset", spec.datasets)
    known("metric", spec.metrics)
    if spec.row == "model":
        known("model", registry.model_ids())
    if spec.group == "encoding":
        known("encoding", ENCODINGS)
    for column in ("seed", "value", *(k for k in spec.keys if k in FLOAT_KEYS)):
        numbers = pd.to_numeric(part[column], errors="coerce")
        if (numbers.isna() & part[column].notna()).any():
            fail(f"column {column} has non-numeric values")
        part[column] = numbers.astype(float)
    if (part["seed"] % 1 != 0).any():
        fail("column seed has non-integer values")
    part["seed"] = part["seed"].astype(int)
    for column in (k for k in spec.keys if k in FLOAT_KEYS):
        part[column] = part[column].round(6) + 0.0
    configs = sorted(part["config"].unique())
    if len(configs) > 1:
        fail(f"rows come from several configs {configs}; a table is built from one config")
    duplicated = part.duplicated([*spec.keys, "seed", "metric"], keep=False)
    if duplicated.any():
        example = part.loc[duplicated, [*spec.keys, "seed", "metric"]].iloc[0].to_dict()
        fail(f"{int(duplicated.sum())} rows share their key, seed and metric, e.g. {example}")
    return spec.sort(part, "seed", "metric")


# What a tidy CSV that is cut or incomplete needs: the table job writes it again from the records.
REBUILD_TABLE = "delete it and re-run the table job to write it again"


def check_complete(tidy: pd.DataFrame) -> None:
    """ValueError naming the first missing cells when `tidy` (check_tidy's output) lacks rows that its
    own rows imply. What is expected is derived from the table itself, not from a config, so that any
    run's table can be checked: within a column block (a dataset of Tables 3/4, an encoding of Table 1,
    Table 5 whole), every row of the table (a model, a σ²) must have, for every seed the block has,
    (a) every displayed metric (TableSpec.columns) that any row of the block has, except the cells the
    paper leaves undefined; (b) the KID twin of each such FID when the block has that KID at all (one
    job writes both); (c) the same metrics under every seed (a metric outside the displayed columns,
    such as Table 3's σx² of only the Σx-estimating models, may be absent from a row, but then from
    all its seeds). A file cut at a row boundary drops the last (row, seed)'s trailing metrics, which
    (a)-(c) see unless whole rows of the table went with them."""
    problems: list[str] = []
    for n, part in tidy.groupby("table"):
        spec = TABLE_SPECS[int(n)]
        block_keys = list(dict.fromkeys(k for k in ("dataset", spec.group) if k))
        for block, rows in part.groupby(block_keys):
            block = dict(zip(block_keys, block))
            present = set(rows["metric"])
            displayed = [m for m in spec.columns.get(block.get(spec.group), ()) if m in present]
            required = displayed + [kid_of(m) for m in displayed if kid_of(m) in present and m.startswith("fid_")]
            seeds = sorted(rows["seed"].unique())
            have = rows.groupby([spec.row, "seed"])["metric"].agg(set)
            for row in rows[spec.row].unique():
                wanted = {m for m in required if (row, m) not in spec.undefined}
                wanted = {m for m in wanted if not (m.startswith("kid_") and (row, "fid_" + m[4:]) in spec.undefined)}
                anywhere = set().union(*(have.get((row, s), set()) for s in seeds))
                for seed in seeds:
                    lacking = sorted((wanted | anywhere) - have.get((row, seed), set()))
                    if lacking:
                        where = ", ".join(f"{k} {v}" for k, v in block.items())
                        problems.append(f"Table {n} ({where}), {spec.row} {row}, seed {seed}: no {', '.join(lacking)}")
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise ValueError(f"incomplete: {'; '.join(problems[:3])}{more}; {REBUILD_TABLE}")


def read_tidy_csv(path: str | Path) -> pd.DataFrame:
    """A tidy table CSV (write_table_outputs' `tidy`), validated by check_tidy and checked whole before
    anything uses it: ValueError naming what is wrong when a row is cut (fewer fields than the header,
    or a last line without its newline: the writer ends every row with one) or rows are missing
    (check_complete). pandas alone would read a cut row with empty trailing fields."""
    import csv
    import io

    text = Path(path).read_bytes().decode("utf-8")
    records = list(csv.reader(io.StringIO(text)))
    if not records:
        raise ValueError(f"empty; {REBUILD_TABLE}")
    cut = [i for i, fields in enumerate(records[1:], 1) if len(fields) != len(records[0])]
    if cut:
        raise ValueError(
            f"row {cut[0]} has {len(records[cut[0]])} of the header's {len(records[0])} fields: the file is "
            f"truncated; {REBUILD_TABLE}"
        )
    if not text.endswith("\n"):
        raise ValueError(f"the last row has no final newline: the file is truncated; {REBUILD_TABLE}")
    tidy = check_tidy(pd.read_csv(io.StringIO(text)))
    check_complete(tidy)
    return tidy


def tidy_from_records(records: list[dict]) -> pd.DataFrame:
    """Tidy DataFrame from one dict per cell (the evaluation jobs' records), validated by check_tidy."""
    return check_tidy(pd.DataFrame.from_records(records))


def _rows(tidy: pd.DataFrame, n: int) -> pd.DataFrame:
    """Table n's validated rows, with only the columns that table uses."""
    spec, tidy = _spec(n), check_tidy(tidy)
    rows = tidy[tidy["table"] == n]
    if rows.empty:
        raise ValueError(f"the tidy data has no rows for Table {n}")
    keep = [c for c in TIDY_COLUMNS if c in BASE_COLUMNS or c in spec.keys]
    keep += [c for c in EXTRA_COLUMNS if c in rows and rows[c].notna().any()]
    return rows[keep].reset_index(drop=True)


def read_paper_table(n: int) -> pd.DataFrame:
    """The paper's Table n as transcribed in arelbo/reference/table{n}.csv (empty cells are NaN)."""
    _spec(n)
    with reference_file(f"table{n}.csv").open() as f:
        return pd.read_csv(f)


# ---------------------------------------------------------------------------- numbers


def summarise(tidy: pd.DataFrame) -> pd.DataFrame:
    """Mean, std (ddof=1; NaN for one seed) and n_seeds (seeds with a non-NaN value) per table ×
    key × metric, in paper order."""
    tidy = check_tidy(tidy)
    parts = []
    for n, rows in tidy.groupby("table"):
        spec = TABLE_SPECS[n]
        stats = rows.groupby([*spec.keys, "metric"])["value"].agg(mean="mean", std="std", n_seeds="count")
        parts.append(spec.sort(stats.reset_index(), "metric").assign(table=n))
    out = pd.concat(parts, ignore_index=True)
    return out[["table", *(c for c in KEY_COLUMNS if c in out), "metric", "mean", "std", "n_seeds"]]


def _column(group: str | None, metric: str) -> str:
    return f"{group}/{metric}" if group else metric


def _wide(tidy: pd.DataFrame, n: int, kid: bool = False) -> tuple[list, dict[str, pd.DataFrame]]:
    """The column blocks present and the mean/std/n_seeds of the displayed cells, one frame each:
    index = rows present (paper order), columns = "block/metric" (just "metric" for Table 5). With
    `kid`, the KID twin's cells ×10³, the std of a one-seed cell being KID's std over subsets."""
    spec = kid_view(TABLE_SPECS[n]) if kid else TABLE_SPECS[n]
    rows = _rows(tidy, n)
    stats = summarise(rows)
    if kid:
        if "uncertainty" in rows:
            within = rows.groupby([*spec.keys, "metric"])["uncertainty"].first().rename("within").reset_index()
            stats = stats.merge(within, on=[*spec.keys, "metric"], how="left")
            one = stats["n_seeds"] == 1
            stats.loc[one, "std"] = stats.loc[one, "within"]
        is_kid = stats["metric"].str.startswith("kid_")
        stats.loc[is_kid, ["mean", "std"]] *= KID_SCALE
    blocks = [g for g in spec.groups if g in set(stats[spec.group])] if spec.group else [None]
    names = [_column(g, m) for g in blocks for m in spec.columns[g]]
    stats["column"] = [
        _column(g, m) for g, m in zip(stats[spec.group] if spec.group else [None] * len(stats), stats["metric"])
    ]
    rows = stats[spec.row].drop_duplicates().to_frame()
    index = pd.Index(spec.sort(rows)[spec.row], name=spec.row)
    frames = {}
    for stat in ("mean", "std", "n_seeds"):
        wide = stats.pivot(index=spec.row, columns="column", values=stat).reindex(index=index, columns=names)
        for row, metric in spec.undefined:
            wide.loc[wide.index == row, [_column(g, metric) for g in blocks if metric in spec.columns[g]]] = np.nan
        wide.columns.name = None
        frames[stat] = wide.fillna(0).astype(int) if stat == "n_seeds" else wide
    return blocks, frames


def summary_wide(tidy: pd.DataFrame, n: int, stat: str = "mean") -> pd.DataFrame:
    """The numbers behind paper_shaped(tidy, n): `stat` ("mean", "std" or "n_seeds") per displayed
    cell, NaN (n_seeds 0) where the cell is undefined or has no value."""
    if stat not in ("mean", "std", "n_seeds"):
        raise ValueError(f"stat must be 'mean', 'std' or 'n_seeds', not {stat!r}")
    return _wide(tidy, n)[1][stat]


def format_number(x: float) -> str:
    """Two decimals for 0 and 1 <= |x| < 1e4, else 3 significant digits in compact scientific notation."""
    if x == 0 or not np.isfinite(x) or 1 <= abs(x) < 1e4:
        return f"{x:.2f}"
    mantissa, exponent = f"{x:.2e}".split("e")
    return f"{mantissa}e{int(exponent):+d}"


def format_cell(
    mean: float, std: float = np.nan, n_seeds: int = 1, *, pm: str = " ± ", dash: str = DASH, minus: str = "-"
) -> str:
    """ "mean", or "mean ± std" for several seeds, the std at the mean's precision; `dash` if NaN."""
    if np.isnan(mean):
        return dash
    text = format_number(mean)
    text = minus + text[1:] if text.startswith("-") else text
    if n_seeds > 1 and not np.isnan(std):
        text += pm + (format_number(std) if "e" in text else f"{std:.2f}")
    return text


def _cells(
    tidy: pd.DataFrame, n: int, *, pm: str, dash: str, minus: str = "-", bold: str | None = None, kid: bool = False
) -> tuple[list, pd.DataFrame]:
    """Displayed cells as strings; with `bold` (a format string like "\\textbf{%s}") the lowest
    printed mean per column is wrapped in it when the table bolds its best. With `kid`, the KID twin
    (every cell shows its ± std: over seeds, or over KID's subsets for one seed)."""
    blocks, stats = _wide(tidy, n, kid=kid)
    mean, std, count = stats["mean"], stats["std"], stats["n_seeds"]
    if kid:
        count = count.clip(lower=2)
    cells = pd.DataFrame(
        {
            c: [format_cell(m, s, k, pm=pm, dash=dash, minus=minus) for m, s, k in zip(mean[c], std[c], count[c])]
            for c in mean
        },
        index=mean.index,
    )
    if bold and TABLE_SPECS[n].bold_best:
        for c in mean:
            printed = mean[c].map(format_number).where(mean[c].notna())
            if printed.notna().any():
                best = printed == format_number(mean[c].min())
                cells.loc[best, c] = [bold % text for text in cells.loc[best, c]]
    return blocks, cells


def paper_shaped(tidy: pd.DataFrame, n: int) -> pd.DataFrame:
    """The displayed table as strings: rows in paper order (index: model id or log10 σ²; Tables 3 and
    4 add the paper's `label`), the paper's columns named "block/metric" ("metric" for Table 5)."""
    _, cells = _cells(tidy, n, pm=" ± ", dash=DASH)
    if kid_view(TABLE_SPECS[n]) is not None and _has_kid(tidy, n):
        _, kid_cells = _cells(tidy, n, pm=" ± ", dash=DASH, kid=True)
        cells = cells.join(kid_cells.rename(columns=lambda c: c + " (x1e3)"))
    if TABLE_SPECS[n].row == "model":
        cells.insert(0, "label", [model_label(m) for m in cells.index])
    return cells


def _has_kid(tidy: pd.DataFrame, n: int) -> bool:
    return bool(_rows(tidy, n)["metric"].str.startswith("kid_").any())


def sample_sizes(tidy: pd.DataFrame, n: int) -> str:
    """ "N_gen = …, N_ref = …" per dataset of Table n's FID/KID rows ("" when they have no sizes)."""
    rows = _rows(tidy, n)
    rows = rows[rows["metric"].str.startswith(("fid_", "kid_"))]
    if rows.empty or "n_samples" not in rows or "n_reference" not in rows:
        return ""
    parts = []
    for dataset, part in rows.groupby("dataset", sort=False):
        gen = sorted({int(v) for v in part["n_samples"].dropna()})
        ref = sorted({int(v) for v in part["n_reference"].dropna()})
        parts.append(
            f"{tex_labels().get(dataset, dataset)}: $N_{{gen}} = {'/'.join(map(str, gen))}$ generated vs "
            f"$N_{{ref}} = {'/'.join(map(str, ref))}$ reference images"
        )
    return "; ".join(parts)


def compare_with_paper(tidy: pd.DataFrame, n: int) -> pd.DataFrame:
    """One row per key × metric that both the reproduction and the paper have: paper, reproduced
    (mean), std, n_seeds, abs_delta = reproduced - paper, rel_delta = abs_delta / |paper| (NaN when the
    paper's value is 0). log10 σ² keys match the paper's to 1 decimal (only keys on its 0.1 grid)."""
    spec = _spec(n)
    paper = read_paper_table(n).melt(id_vars=list(spec.keys), var_name="metric", value_name="paper")
    ours = summarise(_rows(tidy, n)).drop(columns="table").rename(columns={"mean": "reproduced"})
    for key in (k for k in spec.keys if k in FLOAT_KEYS):
        for frame in (paper, ours):
            grid = frame[key].round(1) + 0.0
            frame[key] = grid.where((frame[key] - grid).abs() < 1e-6)
    ours = ours.dropna(subset=list(spec.keys))
    both = paper.dropna(subset=["paper"]).merge(ours, on=[*spec.keys, "metric"], how="inner")
    both["abs_delta"] = both["reproduced"] - both["paper"]
    both["rel_delta"] = both["abs_delta"] / both["paper"].abs().where(both["paper"] != 0)
    both["note"] = ""
    # a plugin's rows (models) and columns (estimators) have no paper value: listed, marked as such
    plugin = _plugin_cells(ours, spec)
    if plugin.any():
        both = pd.concat(
            [both, ours[plugin].assign(paper=np.nan, abs_delta=np.nan, rel_delta=np.nan, note="not in the paper")],
            ignore_index=True,
        )
    columns = [*spec.keys, "metric", "paper", "reproduced", "std", "n_seeds", "abs_delta", "rel_delta", "note"]
    return spec.sort(both[columns], "metric")


def _plugin_cells(ours: pd.DataFrame, spec: TableSpec) -> pd.Series:
    """Which of a summary's rows are a plugin's: a model or an estimator the paper does not have."""
    plugin = pd.Series(False, index=ours.index)
    if spec.row == "model":
        plugin |= ~ours["model"].map(lambda m: registry.MODELS[m].paper if m in registry.MODELS else False)
        extra = {e for e, entry in registry.ESTIMATORS.items() if not entry.paper}
        plugin |= ours["metric"].map(lambda m: m.split("_", 1)[-1] in extra and m.startswith(("fid_", "kid_")))
    return plugin


# ---------------------------------------------------------------------------- LaTeX and files

_TEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}


def tex_escape(text: str) -> str:
    return "".join(_TEX_SPECIAL.get(c, c) for c in str(text))


def _tex_row_label(spec: TableSpec, row) -> str:
    if spec.row == "model":
        return tex_escape(model_label(row)).replace("σx²", r"$\sigma_x^2$").replace("Σx", r"$\Sigma_x$")
    text = f"{row:.1f}" if round(row, 1) == row else f"{row:g}"
    return "$-$" + text[1:] if text.startswith("-") else text


def to_latex(
    tidy: pd.DataFrame, n: int, *, config_name: str, reduced: bool, synthetic_datasets: Iterable[str] = ()
) -> str:
    """A complete booktabs `table` environment (label tab:table{n}) in the paper's layout: its
    columns in one block per dataset (Tables 3, 4; only those in `tidy`) or encoding (Table 1), its
    row order, "--" for undefined cells, the best per column in \\textbf (Tables 3, 4). The caption
    names the table and the config, and says so when the config is reduced or a dataset is synthetic."""
    spec = _spec(n)
    synthetic = set(synthetic_datasets)
    if synthetic - set(DATASETS):
        raise ValueError(f"unknown synthetic dataset(s) {sorted(synthetic - set(DATASETS))}; known: {DATASETS}")
    rows = _rows(tidy, n)
    from arelbo.core.provenance import mixed_provenance

    sizes = sample_sizes(rows, n)
    notes = [f"Sizes: {sizes}." if sizes else ""] + [
        f"Mixed provenance: {tex_escape(x)}." for x in mixed_provenance(rows)
    ]
    tex = _latex_table(
        rows,
        n,
        spec,
        label=f"tab:table{n}",
        config_name=config_name,
        reduced=reduced,
        synthetic=synthetic,
        title=spec.title,
        notes=notes,
        cells_note=r"mean $\pm$ std over seeds",
    )
    if kid_view(spec) is not None and _has_kid(rows, n):
        tex += "\n" + _latex_table(
            rows,
            n,
            kid_view(spec),
            label=f"tab:table{n}-kid",
            config_name=config_name,
            reduced=reduced,
            synthetic=synthetic,
            kid=True,
            notes=notes,
            title="Kernel Inception Distance ($\\times 10^3$; unbiased, valid at small $N$) of the samples of "
            f"Table {n}'s FID columns",
            cells_note=r"KID mean $\pm$ std over seeds, or over 100 KID subsets for one seed",
        )
    return tex


def _latex_table(
    rows: pd.DataFrame,
    n: int,
    spec: TableSpec,
    *,
    label: str,
    config_name: str,
    reduced: bool,
    synthetic: set,
    title: str,
    notes: list[str],
    cells_note: str,
    kid: bool = False,
) -> str:
    blocks, cells = _cells(rows, n, pm=r" $\pm$ ", dash="--", minus="$-$", bold=r"\textbf{%s}", kid=kid)
    caption = [
        f"Reproduction of Table {n} (config: {tex_escape(config_name)}): {title}.",
        f"Cells: {cells_note}"
        + ("; best per column in bold" if spec.bold_best else "")
        + "; -- undefined or not evaluated.",
        *(x for x in notes if x),
    ]
    if reduced:
        caption.append("Reduced configuration: these numbers are not comparable with the paper.")
    caption += [
        f"{tex_labels()[d]} here is a synthetic stand-in."
        for d in DATASETS
        if d in synthetic and d in set(rows["dataset"])
    ]
    lines = [
        r"\begin{table}[htbp]",
        r"\centering",
        rf"\caption{{{' '.join(caption)}}}",
        rf"\label{{{label}}}",
        rf"\begin{{tabular}}{{l{'r' * cells.shape[1]}}}",
        r"\toprule",
    ]
    if spec.group:
        spans, rules, first = [""], [], 2
        for g in blocks:
            width = len(spec.columns[g])
            spans.append(rf"\multicolumn{{{width}}}{{c}}{{{tex_labels()[g]}}}")
            rules.append(rf"\cmidrule(lr){{{first}-{first + width - 1}}}")
            first += width
        lines += [" & ".join(spans) + r" \\", " ".join(rules)]
    header = [tex_labels()[spec.row], *(tex_labels()[m] for g in blocks for m in spec.columns[g])]
    lines += [" & ".join(header) + r" \\", r"\midrule"]
    lines += [
        " & ".join([_tex_row_label(spec, row), *values]) + r" \\"
        for row, values in zip(cells.index, cells.itertuples(index=False))
    ]
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def _csv(df: pd.DataFrame, index: bool = False) -> str:
    return df.to_csv(index=index, float_format=CSV_FLOAT_FORMAT, lineterminator="\n")


def write_table_outputs(
    tidy: pd.DataFrame,
    n: int,
    outdir: str | Path,
    *,
    config_name: str,
    reduced: bool,
    synthetic_datasets: Iterable[str] = (),
) -> dict[str, Path]:
    """Write outdir/table{n}.tex and outdir/tables/table{n}_{tidy,paper,vs_paper}.csv (UTF-8,
    atomically, all rendered before any is written); the same tidy rows in any order give the same
    bytes. Returns {"tex", "tidy", "paper", "vs_paper"} -> path."""
    outdir, rows = Path(outdir), _rows(tidy, n)
    texts = {
        "tex": to_latex(rows, n, config_name=config_name, reduced=reduced, synthetic_datasets=synthetic_datasets),
        "tidy": _csv(rows),
        "paper": _csv(paper_shaped(rows, n), index=True),
        "vs_paper": _csv(compare_with_paper(rows, n)),
    }
    paths = {
        "tex": outdir / f"table{n}.tex",
        **{kind: outdir / "tables" / f"table{n}_{kind}.csv" for kind in ("tidy", "paper", "vs_paper")},
    }
    for kind, path in paths.items():
        atomic_write_bytes(path, texts[kind].encode("utf-8"))
    return paths


def assemble_table(cfg, table: int, metric_files: list[Path], outdir: Path) -> dict:
    """The `table` job: every metric record of one table, read from its JSON files, written as the
    table's outputs (no torch: the job starts without it)."""
    from arelbo.core.safeload import load_json

    records = []
    for path in metric_files:  # one record per file (Tables 3, 4) or a list (a Section 3 grid point)
        data = load_json(path, "delete it and re-run to compute the metric again")  # a cut record: one clear error
        records += data if isinstance(data, list) else [data]
    tidy = tidy_from_records(records)
    return write_table_outputs(
        tidy, table, outdir, config_name=cfg.name, reduced=cfg.reduced, synthetic_datasets=cfg.synthetic_datasets
    )
