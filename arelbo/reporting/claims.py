"""Verdicts on the paper's claims (arelbo/reference/claims.yaml) from a run's tidy table CSVs.

Reads only `tables/table{1,3,4,5}_tidy.csv` under a results folder and the claims file, so a finished
run (or another project's tidy CSVs in the same format) can be re-judged with
`arelbo claims --results DIR`. No torch import.

Every claim gets one verdict:
  PASS          the claimed ordering / trend holds and is significant, or a value is within tolerance;
  FAIL          the reverse is significant, or a value is outside its tolerance;
  INCONCLUSIVE  the evidence does not separate the two sides (never a PASS);
  NOT RUN       the run has no data for it (a dataset or table not configured, a reduced config's
                value claims), listed rather than dropped.

Statistics (docs/design.md §8, "Claims"):
- a comparison "a < factor·b" uses Welch's one-sided t-test on the seed-level values when both sides
  have ≥ 2 seeds; otherwise a one-sided z-test on the means with their within-run standard deviations
  (FID: its delta-method standard error, or a bootstrap's; KID: std over its subsets; MSE, KL, σx²:
  standard error over images; a side with ≥ 2 seeds uses std/√n). No uncertainty estimate → INCONCLUSIVE.
- the p-values of one claim's comparisons are Holm-corrected (each direction separately);
- a trend is Spearman's ρ between the grid key and the metric over every (grid point, seed) value, its
  one-sided p-value from an exact permutation test (all orderings when there are at most 8 values, else
  9,999 seeded random permutations);
- FID columns are decided on FID only when N_gen and N_ref both exceed the 2,048 Inception features,
  else on KID of the same samples (FID's bias at small N differs between models).

Convergence (docs/design.md, "Convergence"): every verdict names the trainings its evidence rests on
that had not converged (`convergence`). In a reduced config a FAIL resting on one is INCONCLUSIVE ("not
converged: …"): a run too short to tell never reads as the paper being wrong. A PASS keeps its
verdict, and under the paper's protocol (not reduced) every verdict stands as measured, flagged.
"""

from __future__ import annotations

import contextvars
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from arelbo.core.errors import ArelboError
from arelbo.core.layout import reference_file
from arelbo.core.runtime import atomic_write_bytes

PASS, FAIL, INCONCLUSIVE, NOT_RUN = "PASS", "FAIL", "INCONCLUSIVE", "NOT RUN"
VERDICTS = (PASS, FAIL, INCONCLUSIVE, NOT_RUN)
TABLES = (1, 3, 4, 5)
FID_FEATURES = 2048  # FID's covariance is full-rank only with more samples than this
PERMUTATIONS = 9999
CLAIMS_COLUMNS = (
    "id",
    "kind",
    "verdict",
    "claim",
    "evidence",
    "test",
    "source",
    "why",
    "tables",
    "datasets",
    "n_seeds",
    "metrics_used",
    "provenance",
    "convergence",
)
# The tidy rows a claim's judgement reads (_side, judge_trend), collected while it is judged, for the
# convergence of the trainings behind them.
_EVIDENCE: contextvars.ContextVar[list | None] = contextvars.ContextVar("evidence", default=None)


def _read(rows: pd.DataFrame) -> pd.DataFrame:
    collected = _EVIDENCE.get()
    if collected is not None:
        collected.append(rows)
    return rows


class ClaimsError(ArelboError, ValueError):
    """A malformed claims file or results folder, with what is wrong and how to fix it."""


# ---------------------------------------------------------------------------- inputs


def load_claims(path: str | Path | None = None) -> dict:
    """The claims file (default: the reviewed arelbo/reference/claims.yaml), checked for shape."""
    if path is None:
        text = reference_file("claims.yaml").read_text()
        where = "arelbo/reference/claims.yaml"
    else:
        text, where = Path(path).read_text(), str(path)
    data = yaml.safe_load(text) or {}
    problems = []
    ids = [c.get("id") for c in data.get("claims", [])]
    if len(set(ids)) != len(ids):
        problems.append(f"duplicate claim ids: {sorted({i for i in ids if ids.count(i) > 1})}")
    for claim in data.get("claims", []):
        kind = claim.get("kind")
        need = {
            "value": ("table", "metric", "paper", "tolerance"),
            "threshold": ("table", "metric"),
            "ordering": ("table", "dataset", "metrics", "require"),
            "trend": ("table", "x", "metric", "sign"),
        }
        if kind not in need:
            problems.append(f"claim {claim.get('id')!r}: kind {kind!r} is not one of {sorted(need)}")
            continue
        missing = [k for k in (*need[kind], "id", "claim", "source", "why") if k not in claim]
        if missing:
            problems.append(f"claim {claim['id']!r}: missing {', '.join(missing)}")
        if kind == "threshold" and ("below" in claim) == ("above" in claim):
            problems.append(f"claim {claim['id']!r}: a threshold claim needs exactly one of below/above")
        if kind == "ordering" and not (
            ("best_of" in claim and "versus" in claim) or "pairs" in claim or ("lower" in claim and "higher" in claim)
        ):
            problems.append(f"claim {claim['id']!r}: an ordering needs best_of+versus, pairs or lower+higher")
        if kind == "ordering" and claim.get("require") not in ("all", "majority", "half"):
            problems.append(f"claim {claim['id']!r}: require must be all, majority or half")
    if problems:
        raise ClaimsError(f"invalid claims file {where}:\n" + "\n".join(f"- {p}" for p in problems))
    return data


def read_tidy(results: str | Path) -> dict[int, pd.DataFrame]:
    """{table number: tidy rows} of the tables a results folder has (tables/table{n}_tidy.csv)."""
    from arelbo.reporting.tables import read_tidy_csv

    results = Path(results)
    if not results.is_dir():
        raise ClaimsError(
            f"results folder {results} does not exist; point --results at a run's outdir (e.g. results/quick)"
        )
    out = {}
    for n in TABLES:
        path = results / "tables" / f"table{n}_tidy.csv"
        if path.is_file():
            try:
                out[n] = read_tidy_csv(path)  # whole and complete, or a ClaimsError: never judged cut
            except ValueError as exc:
                raise ClaimsError(f"{path}: {exc}") from exc
    if not out:
        raise ClaimsError(
            f"{results}/tables/ holds no table*_tidy.csv; build the tables first "
            "(snakemake ... results/<name>/table3.tex) or point --results elsewhere"
        )
    return out


# ---------------------------------------------------------------------------- statistics


@dataclass
class Side:
    """One side of a comparison: a cell's seed-level values and their within-run uncertainties."""

    label: str
    values: np.ndarray
    within: np.ndarray
    n_samples: float = math.nan
    n_reference: float = math.nan

    @property
    def mean(self) -> float:
        return float(np.mean(self.values)) if len(self.values) else math.nan

    @property
    def se(self) -> float:
        if len(self.values) >= 2:
            return float(np.std(self.values, ddof=1) / math.sqrt(len(self.values)))
        return float(self.within[0]) if len(self.within) else math.nan

    def text(self, scale: float = 1.0) -> str:
        if not len(self.values):
            return f"{self.label}: no value"
        spread = "±" + _fmt(self.se * scale) if np.isfinite(self.se) else "(no uncertainty)"
        seeds = f", {len(self.values)} seeds" if len(self.values) > 1 else ""
        return f"{self.label} {_fmt(self.mean * scale)} {spread}{seeds}"


def _fmt(x: float) -> str:
    if not np.isfinite(x):
        return "nan"
    return f"{x:.3g}" if (abs(x) < 0.01 or abs(x) >= 1e4) and x != 0 else f"{x:.2f}" if abs(x) >= 1 else f"{x:.3f}"


def compare(lower: Side, higher: Side, factor: float = 1.0) -> dict:
    """One-sided p-values for "lower < factor·higher" (p_forward) and its reverse (p_reverse)."""
    from scipy import stats

    if not len(lower.values) or not len(higher.values):
        return {"p_forward": math.nan, "p_reverse": math.nan, "test": "missing"}
    if len(lower.values) >= 2 and len(higher.values) >= 2:
        a, b = lower.values, factor * higher.values
        if np.all(a == a[0]) and np.all(b == b[0]):
            p = 0.0 if b[0] > a[0] else 1.0
            return {"p_forward": p, "p_reverse": 1.0 - p if b[0] != a[0] else 1.0, "test": "Welch (no spread)"}
        forward = stats.ttest_ind(b, a, equal_var=False, alternative="greater").pvalue
        reverse = stats.ttest_ind(b, a, equal_var=False, alternative="less").pvalue
        return {"p_forward": float(forward), "p_reverse": float(reverse), "test": "Welch t, seeds"}
    se = math.hypot(lower.se, factor * higher.se)
    if not np.isfinite(se):
        return {"p_forward": math.nan, "p_reverse": math.nan, "test": "no uncertainty estimate"}
    if se == 0:  # both values are exact (no sampling behind them): the ordering is decided as it stands
        diff = factor * higher.mean - lower.mean
        return {"p_forward": float(diff <= 0), "p_reverse": float(diff >= 0), "test": "exact values"}
    z = (factor * higher.mean - lower.mean) / se
    return {
        "p_forward": float(stats.norm.sf(z)),
        "p_reverse": float(stats.norm.cdf(z)),
        "test": "z, within-run uncertainty",
    }


def holm(pvalues: list[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (NaN entries stay NaN and do not count)."""
    p = np.asarray(pvalues, dtype=float)
    finite = np.flatnonzero(np.isfinite(p))
    out = np.full(p.shape, np.nan)
    m = len(finite)
    running = 0.0
    for rank, i in enumerate(finite[np.argsort(p[finite], kind="stable")]):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out.tolist()


def spearman_trend(x: np.ndarray, y: np.ndarray, seed: int = 0) -> tuple[float, float, float]:
    """(ρ, p that ρ > 0, p that ρ < 0) by a permutation test over pairings (exact for ≤ 8 values)."""
    from scipy import stats

    if len(x) < 3 or len(set(np.round(x, 9))) < 2 or np.all(y == y[0]):
        return math.nan, math.nan, math.nan
    resamples = math.factorial(len(x)) if len(x) <= 8 else PERMUTATIONS
    tests = [
        stats.permutation_test(
            (y,),
            spearman_rho_against(x),
            permutation_type="pairings",
            alternative=alternative,
            n_resamples=resamples,
            vectorized=True,
            rng=np.random.default_rng(seed),
        )
        for alternative in ("greater", "less")
    ]
    return float(tests[0].statistic), float(tests[0].pvalue), float(tests[1].pvalue)


def spearman_rho_against(x: np.ndarray):
    """Spearman's ρ of x against a batch of y's (the last axis), as `scipy.stats.spearmanr` computes it
    (Pearson's r of the average ranks) but in one array operation: the permutation test scores 2 × 9,999
    pairings per trend, which one `spearmanr` call each made ~9 s per trend."""
    from scipy import stats

    rank_x = stats.rankdata(x)
    rank_x = (rank_x - rank_x.mean()) / np.sqrt(((rank_x - rank_x.mean()) ** 2).sum())

    def rho(y, axis=-1):
        rank_y = stats.rankdata(y, axis=axis)
        rank_y = rank_y - rank_y.mean(axis=axis, keepdims=True)
        return (rank_y * rank_x).sum(axis=axis) / np.sqrt((rank_y**2).sum(axis=axis))

    return rho


# ---------------------------------------------------------------------------- selecting cells


def _matches(rows: pd.DataFrame, where: dict | None) -> pd.DataFrame:
    for key, value in (where or {}).items():
        if key not in rows:
            return rows.iloc[0:0]
        if value == "max":
            value = rows[key].max()
        if isinstance(value, float) or key.startswith("log10_"):
            rows = rows[(rows[key].astype(float) - float(value)).abs() < 1e-6]
        else:
            rows = rows[rows[key].astype(str) == str(value)]
    return rows


def _side(rows: pd.DataFrame, label: str) -> Side:
    rows = _read(rows.dropna(subset=["value"]).sort_values("seed"))
    within = rows["uncertainty"].to_numpy(float) if "uncertainty" in rows else np.full(len(rows), np.nan)

    def first(column):
        return (
            float(rows[column].iloc[0]) if column in rows and len(rows) and pd.notna(rows[column].iloc[0]) else math.nan
        )

    return Side(label, rows["value"].to_numpy(float), within, first("n_samples"), first("n_reference"))


def _fid_columns(table: int, dataset: str) -> list[str]:
    from arelbo.reporting.tables import TABLE_SPECS

    return [m for m in TABLE_SPECS[table].columns.get(dataset, ()) if m.startswith("fid_")]


def _decision_metric(rows: pd.DataFrame, metric: str) -> tuple[str, str]:
    """FID where its N makes it valid (> 2048 generated and reference images), else KID."""
    if not metric.startswith("fid_"):
        return metric, ""
    fid = rows[rows["metric"] == metric]
    sizes = [fid[c].min() for c in ("n_samples", "n_reference") if c in fid and fid[c].notna().any()]
    if len(sizes) == 2 and min(sizes) > FID_FEATURES:
        return metric, ""
    kid = "kid_" + metric.removeprefix("fid_")
    why = (
        f"N_gen = {int(sizes[0])}, N_ref = {int(sizes[1])} ≤ {FID_FEATURES}"
        if len(sizes) == 2
        else "sample sizes unknown"
    )
    return kid, f"{metric} → {kid} ({why})"


# ---------------------------------------------------------------------------- verdicts


@dataclass
class Verdict:
    id: str
    kind: str
    verdict: str
    claim: str
    evidence: str
    test: str = ""
    source: str = ""
    why: str = ""
    tables: str = ""
    datasets: str = ""
    n_seeds: str = ""
    metrics_used: str = ""
    provenance: str = ""
    convergence: str = ""  # the unconverged trainings its evidence rests on ("" when none)
    extra: dict = field(default_factory=dict)

    def row(self) -> dict:
        return {c: getattr(self, c) for c in CLAIMS_COLUMNS}


def _tables_of(claim) -> list[int]:
    t = claim["table"]
    return [int(x) for x in (t if isinstance(t, list) else [t])]


def _base(claim, **kw) -> Verdict:
    return Verdict(
        id=claim["id"],
        kind=claim["kind"],
        claim=claim["claim"],
        source=claim.get("source", ""),
        why=claim.get("why", ""),
        tables=",".join(map(str, _tables_of(claim))),
        **kw,
    )


def _provenance(rows: pd.DataFrame) -> str:
    from arelbo.core.provenance import mixed_provenance

    return "; ".join(mixed_provenance(rows))


def _one_cell(claim: dict, tidy: dict[int, pd.DataFrame]) -> tuple[pd.DataFrame, Side, Verdict | None]:
    """The rows and values of a single-cell claim (value, threshold), or its NOT RUN verdict."""
    (table,) = _tables_of(claim)
    rows = tidy.get(table)
    if rows is None:
        return None, None, _base(claim, verdict=NOT_RUN, evidence=f"Table {table} was not built by this run")
    cell = _matches(rows[rows["metric"] == claim["metric"]], claim.get("where"))
    side = _side(cell, claim["metric"])
    if not len(side.values):
        datasets = str((claim.get("where") or {}).get("dataset", ""))
        return (
            cell,
            side,
            _base(claim, verdict=NOT_RUN, datasets=datasets, evidence="no reproduced value for this cell"),
        )
    return cell, side, None


def judge_value(claim: dict, tidy: dict[int, pd.DataFrame], reduced: bool | None, because: str = "") -> Verdict:
    """A value claim (within tolerance of the paper's number), judged only under the paper's protocol;
    `because`: why the run is reduced (the settings below the paper's), said in a NOT RUN's evidence."""
    cell, side, not_run = _one_cell(claim, tidy)
    if not_run:
        return not_run
    datasets = ",".join(sorted(set(cell["dataset"])))
    if reduced is None:
        return _base(
            claim,
            verdict=NOT_RUN,
            datasets=datasets,
            evidence="unknown whether the config is reduced (no `reduced` column): pass --not-reduced",
        )
    if reduced:
        return _base(
            claim,
            verdict=NOT_RUN,
            datasets=datasets,
            n_seeds=str(len(side.values)),
            evidence=f"reduced config{f' ({because})' if because else ''}: {side.text()} is not comparable "
            f"with the paper's {claim['paper']:g}",
        )
    paper, tol, ours = float(claim["paper"]), float(claim["tolerance"]), side.mean
    if paper == 0:
        # a paper value printed as 0 matches when the reproduction prints the same
        ok = abs(ours) < claim.get("printed_half_unit", 0.005)
        evidence = f"reproduced {_fmt(ours)} vs paper 0 (matched when it prints as 0.00)"
        test = "printed precision"
    else:
        rel = (ours - paper) / abs(paper)
        ok = abs(rel) <= tol
        evidence = f"reproduced {side.text()} vs paper {paper:g}: {rel:+.1%} (tolerance ±{tol:.0%})"
        test = f"relative difference ≤ {tol:.0%}"
    return _base(
        claim,
        verdict=PASS if ok else FAIL,
        evidence=evidence,
        test=test,
        datasets=datasets,
        n_seeds=str(len(side.values)),
        metrics_used=claim["metric"],
        provenance=_provenance(cell),
    )


def judge_threshold(claim: dict, tidy: dict[int, pd.DataFrame], alpha: float) -> Verdict:
    from scipy import stats

    cell, side, not_run = _one_cell(claim, tidy)
    if not_run:
        return not_run
    below = "below" in claim
    bound = float(claim["below"] if below else claim["above"])
    if len(side.values) >= 2:
        # one-sample t-test on the seed values against the bound
        p_lt = float(stats.ttest_1samp(side.values, bound, alternative="less").pvalue)
        p_gt = float(stats.ttest_1samp(side.values, bound, alternative="greater").pvalue)
        test = "one-sample t, seeds"
        if np.all(side.values == side.values[0]):
            p_lt, p_gt = float(side.values[0] >= bound), float(side.values[0] <= bound)
    elif np.isfinite(side.se) and side.se > 0:
        z = (bound - side.mean) / side.se
        p_lt, p_gt = float(stats.norm.sf(z)), float(stats.norm.cdf(z))
        test = "z, within-run uncertainty"
    elif side.se == 0:  # an exact value (no sampling behind it)
        p_lt, p_gt = float(side.mean >= bound), float(side.mean <= bound)
        test = "exact value"
    else:
        p_lt = p_gt = math.nan
        test = "no uncertainty estimate"
    p_forward, p_reverse = (p_lt, p_gt) if below else (p_gt, p_lt)
    verdict = PASS if p_forward < alpha else FAIL if p_reverse < alpha else INCONCLUSIVE
    relation = "<" if below else ">"
    evidence = f"{side.text()} {relation} {bound:g}? p = {_fmt(p_forward)}"
    return _base(
        claim,
        verdict=verdict,
        evidence=evidence,
        test=test,
        datasets=",".join(sorted(set(cell["dataset"]))),
        n_seeds=str(len(side.values)),
        metrics_used=claim["metric"],
        provenance=_provenance(cell),
    )


def _group(spec, groups: dict) -> list[str]:
    if isinstance(spec, str):
        if spec not in groups:
            raise ClaimsError(f"unknown model group {spec!r}; the claims file defines {sorted(groups)}")
        return list(groups[spec])
    return list(spec)


def judge_ordering(claim: dict, tidy: dict[int, pd.DataFrame], groups: dict, alpha: float) -> Verdict:
    from arelbo.reporting.tables import TABLE_SPECS

    # lower < factor × higher; `ratio_at_least: r` says higher ≥ r × lower, i.e. factor 1/r
    dataset, require = claim["dataset"], claim["require"]
    factor = float(claim.get("factor", 1.0)) / float(claim.get("ratio_at_least", 1.0))
    comparisons, notes, used, seeds, frames = [], [], [], set(), []
    best_incomplete = False
    for table in _tables_of(claim):
        rows = tidy.get(table)
        metrics = _fid_columns(table, dataset) if claim["metrics"] == "fid" else list(claim["metrics"])
        if rows is None:  # the table was not built: every comparison it covers is "not run"
            rows = pd.DataFrame(columns=["dataset", "model", "seed", "metric", "value"])
        rows = rows[rows["dataset"] == dataset]
        if len(rows):
            frames.append(rows)
        for metric in metrics:
            decided, note = _decision_metric(rows, metric) if len(rows) else (metric, "")
            if len(rows):
                used.append(decided)
            if note:
                notes.append(note)
            cells = rows[rows["metric"] == decided]

            def side(model):
                s = _side(cells[cells["model"] == model], model)
                seeds.add(len(s.values))
                return s

            undefined = {m for m, what in TABLE_SPECS[table].undefined if what == metric}

            def models(spec):  # a model whose cell the paper leaves undefined ("–") is not compared
                return [m for m in _group(spec, groups) if m not in undefined]

            if "best_of" in claim:
                candidates = [side(m) for m in models(claim["best_of"])]
                present = [s for s in candidates if len(s.values)]
                if len(present) < len(candidates):
                    notes.append(
                        f"{len(candidates) - len(present)} of the {len(candidates)} models the best is "
                        f"chosen from not run for {decided}: an unrun one could be the best, so the "
                        "claim cannot fail"
                    )
                    best_incomplete = True
                best = min(present, key=lambda s: s.mean) if present else Side("best", np.array([]), np.array([]))
                best.label = f"best AR ({best.label})" if present else "best (none run)"
                pairs = [(best, side(m)) for m in models(claim["versus"])]
            elif "pairs" in claim:
                pairs = [(side(a), side(b)) for a, b in claim["pairs"] if a not in undefined and b not in undefined]
            else:
                pairs = [(side(a), side(b)) for a in models(claim["lower"]) for b in models(claim["higher"]) if a != b]
            for lower, higher in pairs:
                comparisons.append((decided, lower, higher, compare(lower, higher, factor)))
    total = len(comparisons)
    ran = [c for c in comparisons if c[3]["test"] != "missing"]
    if not ran:
        return _base(
            claim,
            verdict=NOT_RUN,
            datasets=dataset,
            evidence=f"none of the {total} comparisons has data in this run ({dataset} or its models not run)",
        )
    forward = holm([c[3]["p_forward"] for c in ran])
    reverse = holm([c[3]["p_reverse"] for c in ran])
    wins = sum(p < alpha for p in forward if np.isfinite(p))
    losses = sum(p < alpha for p in reverse if np.isfinite(p))
    if require == "all":
        verdict = FAIL if losses else PASS if wins == total else INCONCLUSIVE
    elif require == "majority":
        verdict = PASS if wins > total / 2 else FAIL if losses >= total / 2 else INCONCLUSIVE
    else:  # half
        verdict = PASS if wins >= total / 2 else FAIL if losses > total / 2 else INCONCLUSIVE
    if verdict == FAIL and best_incomplete:
        verdict = INCONCLUSIVE
    scale = lambda metric: 1e3 if metric.startswith("kid_") else 1.0  # noqa: E731
    rel = "<" if factor == 1 else f"< {factor:.3g}×"
    details = []
    for (metric, lower, higher, _result), pf, pr in zip(ran, forward, reverse):
        mark = "✓" if np.isfinite(pf) and pf < alpha else "✗" if np.isfinite(pr) and pr < alpha else "?"
        details.append(
            f"{mark} {metric}{' ×1e3' if scale(metric) != 1 else ''}: {lower.text(scale(metric))} "
            f"{rel} {higher.text(scale(metric))} (p_holm = {_fmt(pf)})"
        )
    missing = total - len(ran)
    head = (
        f"{wins} of {total} comparisons significant in the claimed direction, {losses} against"
        + (f", {missing} not run" if missing else "")
        + f" (require {require})"
    )
    evidence = "; ".join([head, *dict.fromkeys(notes), *details])
    tests = sorted({c[3]["test"] for c in ran})
    return _base(
        claim,
        verdict=verdict,
        evidence=evidence,
        datasets=dataset,
        test=f"{', '.join(tests)}; one-sided, Holm over {len(ran)} comparisons, α = {alpha:g}",
        n_seeds=",".join(map(str, sorted(seeds - {0}))),
        metrics_used=",".join(dict.fromkeys(used)),
        provenance=_provenance(pd.concat(frames)) if frames else "",
    )


def judge_trend(claim: dict, tidy: dict[int, pd.DataFrame], alpha: float) -> Verdict:
    (table,) = _tables_of(claim)
    rows = tidy.get(table)
    if rows is None:
        return _base(claim, verdict=NOT_RUN, evidence=f"Table {table} was not built by this run")
    cells = _read(_matches(rows[rows["metric"] == claim["metric"]], claim.get("where")).dropna(subset=["value"]))
    points = cells[claim["x"]].nunique() if len(cells) else 0
    if points < 2:
        return _base(
            claim, verdict=NOT_RUN, evidence=f"{points} grid point(s) with {claim['metric']}: a trend needs ≥ 2"
        )
    x, y = cells[claim["x"]].to_numpy(float), cells["value"].to_numpy(float)
    rho, p_pos, p_neg = spearman_trend(x, y)
    sign = int(claim["sign"])
    p_forward, p_reverse = (p_pos, p_neg) if sign > 0 else (p_neg, p_pos)
    if not np.isfinite(rho):
        verdict, evidence = (
            INCONCLUSIVE,
            f"{len(x)} values at {points} grid points: too few or constant for a rank test",
        )
    else:
        verdict = PASS if p_forward < alpha else FAIL if p_reverse < alpha else INCONCLUSIVE
        exact = "exact" if len(x) <= 8 else f"{PERMUTATIONS} permutations"
        direction = "positive" if sign > 0 else "negative"
        evidence = (
            f"Spearman ρ({claim['x']}, {claim['metric']}) = {rho:+.2f} over {len(x)} values at {points} grid "
            f"points; claimed {direction}: p = {_fmt(p_forward)} ({exact})"
        )
    seeds = cells.groupby(claim["x"])["seed"].nunique()
    return _base(
        claim,
        verdict=verdict,
        evidence=evidence,
        test="Spearman permutation test, one-sided",
        datasets="mnist",
        n_seeds=",".join(map(str, sorted(set(seeds)))),
        metrics_used=claim["metric"],
        provenance=_provenance(cells),
    )


def value_claims(claims: dict) -> list[dict]:
    """One value claim per cell of the paper's Tables 1, 3, 4, 5 with a tolerance in the claims file."""
    from arelbo.reporting.tables import TABLE_SPECS, read_paper_table

    out = []
    for n, tolerances in sorted(claims.get("value_tolerances", {}).items()):
        spec = TABLE_SPECS[int(n)]
        paper = read_paper_table(int(n)).melt(id_vars=list(spec.keys), var_name="metric", value_name="paper")
        for record in paper.dropna(subset=["paper"]).to_dict("records"):
            family = "fid" if record["metric"].startswith("fid_") else record["metric"]
            if family not in tolerances:
                continue
            where = {k: record[k] for k in spec.keys}
            label = "/".join(f"{v:+.1f}" if isinstance(v, float) else str(v) for v in where.values())
            out.append(
                {
                    "id": f"t{n}:{label}:{record['metric']}",
                    "kind": "value",
                    "table": int(n),
                    "where": where,
                    "metric": record["metric"],
                    "paper": float(record["paper"]),
                    "tolerance": float(tolerances[family]),
                    "claim": f"Table {n}, {label}, {record['metric']} = {record['paper']:g}",
                    "source": f"Table {n}",
                    "why": "docs/design.md §8 value tolerance",
                }
            )
    return out


def paper_tidy(uncertainty: float = 0.1) -> dict[int, pd.DataFrame]:
    """The paper's own Tables 1, 3, 4, 5 as tidy rows (one seed, each value given `uncertainty`, N
    as the paper's 10,000 samples) plus its two quoted σx² values: judging them checks that the
    claims file encodes what the paper's numbers say (`arelbo claims --paper`)."""
    from arelbo.reporting.tables import TABLE_SPECS, check_tidy, read_paper_table

    out = {}
    for n in TABLES:
        spec = TABLE_SPECS[n]
        rows = read_paper_table(n).melt(id_vars=list(spec.keys), var_name="metric", value_name="value")
        rows = rows.dropna(subset=["value"]).assign(
            table=n,
            seed=0,
            config="paper",
            commit="paper",
            uncertainty=uncertainty,
            reduced=False,
            n_samples=10000,
            n_reference=10000,
        )
        if "dataset" not in rows:
            rows["dataset"] = "mnist"
        if n == 3:
            quoted = pd.DataFrame(
                [
                    {
                        **rows.iloc[0].to_dict(),
                        "dataset": d,
                        "model": "iso_i_arelbo",
                        "metric": "sigma_x2",
                        "value": v,
                        "uncertainty": 1e-4,
                    }
                    for d, v in (("mnist", 0.0056), ("celeba", 0.0050))
                ]
            )
            rows = pd.concat([rows, quoted], ignore_index=True)
        out[n] = check_tidy(rows)
    return out


def is_reduced(tidy: dict[int, pd.DataFrame]) -> bool | None:
    values = set()
    for rows in tidy.values():
        if "reduced" in rows:
            values |= {str(v).lower() == "true" for v in rows["reduced"].dropna()}
    if not values:
        return None
    return True in values  # any reduced record makes the run's values incomparable


def reduced_reasons(tidy: dict[int, pd.DataFrame]) -> str:
    """Why the records say the run is reduced: their `reduced_because` values (records of an older
    arelbo have none)."""
    reasons: dict[str, None] = {}
    for rows in tidy.values():
        if "reduced_because" in rows:
            for text in rows["reduced_because"].dropna():
                reasons.update(dict.fromkeys(r for r in str(text).split("; ") if r))
    return "; ".join(reasons)


def _with_plugin_models(claims: dict, tidy: dict[int, pd.DataFrame]) -> dict[str, list[str]]:
    """The claims file's model groups, the `every_other_model` ones extended by the plugin models
    (arelbo.core.registry entries not in the paper) that the run's Tables 3/4 have rows for."""
    from arelbo.core import registry

    groups = {name: list(models) for name, models in claims.get("groups", {}).items()}
    ran = {m for n in (3, 4) if n in tidy and "model" in tidy[n] for m in tidy[n]["model"]}
    plugins = [m for m, entry in registry.MODELS.items() if not entry.paper and m in ran]
    for name in claims.get("every_other_model", []):
        if name not in groups:
            raise ClaimsError(f"every_other_model names {name!r}, which is not a group of the claims file")
        groups[name] += [m for m in plugins if m not in groups[name]]
    return groups


def judge(tidy: dict[int, pd.DataFrame], claims: dict | None = None, *, reduced: bool | None = None) -> pd.DataFrame:
    """Every claim's verdict as a DataFrame with CLAIMS_COLUMNS: the textual claims first (in file
    order), then the generated per-cell value claims."""
    claims = load_claims() if claims is None else claims
    alpha = float(claims.get("alpha", 0.05))
    groups = _with_plugin_models(claims, tidy)
    because = reduced_reasons(tidy) if reduced is None else "--comparable reduced" if reduced else ""
    reduced = is_reduced(tidy) if reduced is None else reduced
    out = []
    for claim in [*claims.get("claims", []), *value_claims(claims)]:
        kind = claim["kind"]
        collected: list[pd.DataFrame] = []
        token = _EVIDENCE.set(collected)
        try:
            if kind == "value":
                verdict = judge_value(claim, tidy, reduced, because)
            elif kind == "threshold":
                verdict = judge_threshold(claim, tidy, alpha)
            elif kind == "ordering":
                verdict = judge_ordering(claim, tidy, groups, alpha)
            else:
                verdict = judge_trend(claim, tidy, alpha)
        finally:
            _EVIDENCE.reset(token)
        out.append(_with_convergence(verdict, collected, reduced=bool(reduced)))
    return pd.DataFrame([v.row() for v in out], columns=list(CLAIMS_COLUMNS))


def _training_label(row) -> str:
    """The training a tidy row's value comes from: a model of Table 3/4, or a Section 3 grid point."""
    keys = [f"{k} {row[k]}" for k in ("encoding", "log10_sigma_x2", "log10_sigma_z2") if k in row and pd.notna(row[k])]
    what = ", ".join(keys) if keys else f"{row['dataset']} {row['model']}"
    return f"{what} (seed {row['seed']})"


def unconverged_trainings(rows: list[pd.DataFrame]) -> list[str]:
    """'<training>: <why>' for every training behind these rows that had not converged (rows
    without the convergence fields — records of an older arelbo — count as converged)."""
    notes: dict[str, str] = {}
    for frame in rows:
        if "converged" not in frame or not len(frame):
            continue
        flags = frame["converged"].map(lambda v: str(v).lower() in ("false", "0"))
        for _, row in frame[flags].iterrows():
            notes.setdefault(_training_label(row), str(row.get("convergence", "") or "not converged"))
    return [f"{label}: {why}" for label, why in notes.items()]


def _with_convergence(verdict: Verdict, rows: list[pd.DataFrame], *, reduced: bool) -> Verdict:
    unconverged = unconverged_trainings(rows)
    if not unconverged:
        return verdict
    verdict.convergence = "not converged: " + " | ".join(unconverged)
    if reduced and verdict.verdict == FAIL:
        # a reduced run too short to tell: the measured FAIL is kept in the evidence, not as the verdict
        verdict.evidence = f"not converged ({len(unconverged)} of its trainings), measured FAIL; {verdict.evidence}"
        verdict.verdict = INCONCLUSIVE
    return verdict


def _convergence_mark(convergence: str) -> str:
    count = convergence.count(" | ") + 1 if convergence else 0
    return f" [{count} training{'s' * (count != 1)} not converged]" if count else ""


# ---------------------------------------------------------------------------- outputs


def summary_counts(verdicts: pd.DataFrame) -> dict[str, dict[str, int]]:
    """{"text": {verdict: n}, "value": {verdict: n}}: the paper's textual claims and its table cells."""
    out = {}
    for name, part in (
        ("text", verdicts[~verdicts["id"].str.contains(":")]),
        ("value", verdicts[verdicts["id"].str.contains(":")]),
    ):
        out[name] = {v: int((part["verdict"] == v).sum()) for v in VERDICTS}
    return out


def summary_text(verdicts: pd.DataFrame, *, title: str = "Claims") -> str:
    """A plain-text summary for a terminal: counts, then every textual claim's verdict and evidence head."""
    counts = summary_counts(verdicts)
    lines = [
        f"{title}: "
        + ", ".join(f"{n} {v}" for v, n in counts["text"].items() if n)
        + " (claims from the text); table cells: "
        + ", ".join(f"{n} {v}" for v, n in counts["value"].items() if n)
    ]
    for row in verdicts[~verdicts["id"].str.contains(":")].itertuples():
        mark = _convergence_mark(getattr(row, "convergence", "") or "")
        lines.append(f"  {row.verdict:<12} {row.id}: {row.evidence.split('; ')[0]}{mark}")
    return "\n".join(lines)


# The claims' Unicode maths in LaTeX that pdflatex also compiles (tex_escape first, then these).
_TEX_UNICODE = {
    "σ": r"$\sigma$",
    "Σ": r"$\Sigma$",
    "ρ": r"$\rho$",
    "²": r"$^2$",
    "⁻¹": r"$^{-1}$",
    "⁻²": r"$^{-2}$",
    "⁻³": r"$^{-3}$",
    "×": r"$\times$",
    "≈": r"$\approx$",
    "≥": r"$\geq$",
    "≤": r"$\leq$",
    "→": r"$\to$",
    "±": r"$\pm$",
    "α": r"$\alpha$",
    "–": "--",
    "—": "---",
    "✓": "yes",
    "✗": "no",
    "’": "'",
}


def tex_text(text: str) -> str:
    from arelbo.reporting.tables import tex_escape

    out = tex_escape(text)
    for char, tex in sorted(_TEX_UNICODE.items(), key=lambda kv: -len(kv[0])):
        out = out.replace(char, tex)
    return out


def claims_to_latex(verdicts: pd.DataFrame, *, config_name: str = "", notes: tuple[str, ...] = ()) -> str:
    """Two booktabs tables: every textual claim (id, claim, verdict, evidence head) and the per-table
    counts of the value claims."""
    from arelbo.reporting.tables import tex_escape

    text = verdicts[~verdicts["id"].str.contains(":")]
    value = verdicts[verdicts["id"].str.contains(":")]
    caption = (
        f"Verdicts on the paper's claims (config: {tex_escape(config_name)}). PASS: the claimed ordering or "
        "trend is significant (one-sided, $\\alpha = 0.05$, Holm within a claim) or a value is within its "
        "tolerance; FAIL: the reverse is significant or the value is outside; INCONCLUSIVE: the evidence "
        "does not separate the sides, or (reduced configs) a FAIL rests on trainings that had not converged; "
        "NOT RUN: no data in this run. " + " ".join(tex_text(n) for n in notes)
    )
    lines = [
        r"\begin{table}[htbp]",
        r"\centering",
        rf"\caption{{{caption}}}",
        r"\label{tab:claims}",
        r"\small",
        r"\begin{tabular}{p{0.22\linewidth}p{0.36\linewidth}lp{0.28\linewidth}}",
        r"\toprule",
        r"Claim & Statement & Verdict & Evidence \\",
        r"\midrule",
    ]
    for row in text.itertuples():
        lines.append(
            " & ".join(
                [
                    tex_text(row.id),
                    tex_text(row.claim),
                    row.verdict,
                    tex_text(row.evidence.split("; ")[0] + _convergence_mark(getattr(row, "convergence", "") or "")),
                ]
            )
            + r" \\"
        )
    lines += [
        r"\bottomrule",
        r"\end{tabular}",
        r"\end{table}",
        "",
        r"\begin{table}[htbp]",
        r"\centering",
        r"\caption{Value claims: every cell of the paper's tables against the reproduction (MSE $\pm$10\%, "
        r"FID $\pm$15\%, Section-3 criteria $\pm$25\%; reduced configs: NOT RUN).}",
        r"\label{tab:claims-values}",
        r"\begin{tabular}{lrrrr}",
        r"\toprule",
        r"Table & PASS & FAIL & INCONCLUSIVE & NOT RUN \\",
        r"\midrule",
    ]
    for table, part in value.groupby(value["tables"], sort=True):
        lines.append(
            " & ".join([f"Table {table}", *(str(int((part["verdict"] == v).sum())) for v in VERDICTS)]) + r" \\"
        )
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def write_claims(
    results: str | Path,
    out_csv: str | Path | None = None,
    out_tex: str | Path | None = None,
    *,
    claims_file: str | Path | None = None,
    reduced: bool | None = None,
    config_name: str | None = None,
) -> pd.DataFrame:
    """Judge a results folder and write claims.csv and claims.tex (atomically; default: in it)."""
    results = Path(results)
    tidy = read_tidy(results)
    verdicts = judge(tidy, load_claims(claims_file), reduced=reduced)
    if config_name is None:
        names = sorted({str(c) for rows in tidy.values() for c in rows["config"].unique()})
        config_name = ", ".join(names)
    from arelbo.core.provenance import mixed_provenance

    notes = tuple(f"Mixed provenance: {n}." for n in mixed_provenance(pd.concat(tidy.values(), ignore_index=True)))
    out_csv = Path(out_csv) if out_csv else results / "claims.csv"
    out_tex = Path(out_tex) if out_tex else results / "claims.tex"
    csv = verdicts.to_csv(index=False, lineterminator="\n")
    tex = claims_to_latex(verdicts, config_name=config_name, notes=notes)
    atomic_write_bytes(out_csv, csv.encode("utf-8"))
    atomic_write_bytes(out_tex, tex.encode("utf-8"))
    return verdicts
