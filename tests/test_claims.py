"""Verdicts on the paper's claims (arelbo/claims.py): hand-made tidy CSVs whose verdicts are known —
a clear pass, a clear fail, overlapping evidence (inconclusive) and missing data (not run) — for
every kind of claim, plus the statistics underneath (Holm, the exact Spearman permutation p-value),
the claims file's well-formedness and the `arelbo claims` command."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from arelbo.reporting import claims as C
from arelbo.reporting.tables import check_tidy

REPO = Path(__file__).resolve().parents[1]


def t3_rows(values: dict, *, dataset="mnist", metric="fid_gmm10", uncertainty=0.5, n=10000, reduced=False, seeds=(0,)):
    """Table 3 rows: values[model] is one number (per seed: a list)."""
    rows = []
    for model, v in values.items():
        per_seed = v if isinstance(v, (list, tuple)) else [v] * len(seeds)
        for seed, value in zip(seeds, per_seed):
            rows.append(
                dict(
                    table=3,
                    dataset=dataset,
                    model=model,
                    seed=seed,
                    metric=metric,
                    value=value,
                    uncertainty=uncertainty,
                    n_samples=n,
                    n_reference=n,
                    config="hand",
                    commit="c0",
                    reduced=reduced,
                )
            )
    return rows


def ordering(**kw):
    base = dict(
        id="x",
        kind="ordering",
        claim="c",
        source="s",
        why="w",
        table=3,
        dataset="mnist",
        metrics=["fid_gmm10"],
        pairs=[["iso_i_arelbo", "iso_i_trainable"]],
        require="all",
    )
    return {**base, **kw}


def verdict_of(claim, rows, **kw):
    tidy = {}
    for n in sorted({r["table"] for r in rows}):
        tidy[n] = check_tidy(pd.DataFrame([r for r in rows if r["table"] == n]))
    out = C.judge(tidy, {"alpha": 0.05, "groups": {}, "claims": [claim]}, **kw)
    return out.iloc[0]


# ---------------------------------------------------------------------------- orderings


@pytest.mark.parametrize(
    "arelbo, trainable, expected",
    [
        (10.0, 14.0, C.PASS),  # 4 apart, se √(0.5²+0.5²) = 0.71: z = 5.7
        (14.0, 10.0, C.FAIL),  # the reverse, as clearly
        (10.0, 10.6, C.INCONCLUSIVE),  # 0.6 apart: z = 0.85, the uncertainties overlap
    ],
)
def test_one_seed_ordering_uses_the_within_run_uncertainty(arelbo, trainable, expected):
    row = verdict_of(ordering(), t3_rows({"iso_i_arelbo": arelbo, "iso_i_trainable": trainable}))
    assert row["verdict"] == expected, row["evidence"]
    assert "within-run" in row["test"]


def test_one_seed_without_an_uncertainty_is_never_a_pass():
    row = verdict_of(ordering(), t3_rows({"iso_i_arelbo": 1.0, "iso_i_trainable": 100.0}, uncertainty=np.nan))
    assert row["verdict"] == C.INCONCLUSIVE


def test_several_seeds_use_welch_on_the_seed_values():
    seeds = (0, 1, 2)
    clear = t3_rows({"iso_i_arelbo": [10.0, 10.5, 9.8], "iso_i_trainable": [14.0, 14.4, 13.7]}, seeds=seeds)
    assert verdict_of(ordering(), clear)["verdict"] == C.PASS
    # within-run uncertainties are tiny, but the seeds disagree: the seed-level test decides
    overlap = t3_rows(
        {"iso_i_arelbo": [10.0, 14.0, 12.0], "iso_i_trainable": [13.0, 11.0, 12.5]}, seeds=seeds, uncertainty=1e-6
    )
    row = verdict_of(ordering(), overlap)
    assert row["verdict"] == C.INCONCLUSIVE and "Welch" in row["test"]


def test_missing_data_is_not_run_and_a_partial_claim_cannot_pass():
    claim = ordering(pairs=[["iso_i_arelbo", "iso_i_trainable"], ["diag_d_arelbo", "diag_d_trainable"]])
    none = verdict_of(claim, t3_rows({"vae": 10.0}))
    assert none["verdict"] == C.NOT_RUN
    half = verdict_of(claim, t3_rows({"iso_i_arelbo": 10.0, "iso_i_trainable": 20.0}))
    assert half["verdict"] == C.INCONCLUSIVE and "1 not run" in half["evidence"]
    other_dataset = verdict_of(ordering(dataset="celeba"), t3_rows({"iso_i_arelbo": 10.0, "iso_i_trainable": 20.0}))
    assert other_dataset["verdict"] == C.NOT_RUN


def test_majority_counts_significant_comparisons_after_holm():
    pairs = [
        ["iso_i_arelbo", "iso_i_trainable"],
        ["diag_i_arelbo", "diag_i_trainable"],
        ["iso_d_arelbo", "iso_d_trainable"],
        ["diag_d_arelbo", "diag_d_trainable"],
    ]
    claim = ordering(pairs=pairs, require="majority")
    three_wins = {
        "iso_i_arelbo": 10,
        "iso_i_trainable": 20,
        "diag_i_arelbo": 10,
        "diag_i_trainable": 20,
        "iso_d_arelbo": 10,
        "iso_d_trainable": 20,
        "diag_d_arelbo": 20,
        "diag_d_trainable": 10,
    }
    assert verdict_of(claim, t3_rows(three_wins))["verdict"] == C.PASS
    two_wins = {**three_wins, "iso_d_arelbo": 20, "iso_d_trainable": 10}
    assert verdict_of(claim, t3_rows(two_wins))["verdict"] == C.FAIL  # 2 of 4 against: no majority possible
    two_wins_two_ties = {
        **three_wins,
        "iso_d_arelbo": 10,
        "iso_d_trainable": 10.1,
        "diag_d_arelbo": 10,
        "diag_d_trainable": 10.1,
    }
    assert verdict_of(claim, t3_rows(two_wins_two_ties))["verdict"] == C.INCONCLUSIVE


def test_best_of_picks_the_best_member_and_skips_undefined_cells():
    groups = {"ar": ["iso_i_arelbo", "diag_d_arelbo"], "others": ["vae", "ae"]}
    claim = ordering(best_of="ar", versus="others", metrics=["fid_prior"], pairs=None)
    del claim["pairs"]
    rows = t3_rows({"iso_i_arelbo": 30.0, "diag_d_arelbo": 10.0, "vae": 20.0}, metric="fid_prior")
    tidy = {3: check_tidy(pd.DataFrame(rows))}
    row = C.judge(tidy, {"alpha": 0.05, "groups": groups, "claims": [claim]}).iloc[0]
    # AE has no prior FID in the paper ("–"): it is not a comparison, so nothing is "not run"
    assert row["verdict"] == C.PASS and "1 of 1" in row["evidence"] and "diag_d_arelbo" in row["evidence"]


def test_best_of_cannot_fail_while_a_candidate_for_the_best_was_not_run():
    groups = {"ar": ["iso_i_arelbo", "diag_d_arelbo"], "others": ["vae"]}
    claim = {**ordering(best_of="ar", versus="others", metrics=["fid_prior"])}
    del claim["pairs"]
    rows = t3_rows({"iso_i_arelbo": 30.0, "vae": 20.0}, metric="fid_prior")  # diag_d_arelbo not run
    row = C.judge({3: check_tidy(pd.DataFrame(rows))}, {"alpha": 0.05, "groups": groups, "claims": [claim]}).iloc[0]
    assert row["verdict"] == C.INCONCLUSIVE and "an unrun one could be the best" in row["evidence"]
    rows += t3_rows({"diag_d_arelbo": 25.0}, metric="fid_prior")  # every candidate run: now it fails
    row = C.judge({3: check_tidy(pd.DataFrame(rows))}, {"alpha": 0.05, "groups": groups, "claims": [claim]}).iloc[0]
    assert row["verdict"] == C.FAIL


def test_factor_shifts_the_margin():
    far_worse = ordering(ratio_at_least=1.5, metrics=["mse"], pairs=[["ae", "vae"]])
    rows = t3_rows({"ae": 10.0, "vae": 14.0}, metric="mse", uncertainty=0.01)  # 14 < 1.5 × 10: the reverse
    assert verdict_of(far_worse, rows)["verdict"] == C.FAIL
    rows = t3_rows({"ae": 10.0, "vae": 16.0}, metric="mse", uncertainty=0.01)
    assert verdict_of(far_worse, rows)["verdict"] == C.PASS
    within_10_percent = ordering(factor=1.1, metrics=["mse"], pairs=[["vae", "ae"]])
    rows = t3_rows({"ae": 10.0, "vae": 10.5}, metric="mse", uncertainty=0.01)  # 10.5 < 11
    assert verdict_of(within_10_percent, rows)["verdict"] == C.PASS


def test_small_sample_fid_orderings_are_decided_on_kid():
    fid = t3_rows({"iso_i_arelbo": 10.0, "iso_i_trainable": 20.0}, n=32)  # FID says AR-ELBO is better...
    kid = t3_rows({"iso_i_arelbo": 0.05, "iso_i_trainable": 0.01}, metric="kid_gmm10", uncertainty=0.001, n=32)
    row = verdict_of(ordering(metrics="fid"), fid + kid)  # ...KID says the reverse, and KID is valid at N = 32
    assert row["verdict"] == C.FAIL and "fid_gmm10 → kid_gmm10 (N_gen = 32" in row["evidence"]
    assert row["metrics_used"].split(",") == ["kid_prior", "kid_2ndvae", "kid_gmm10"]
    big = t3_rows({"iso_i_arelbo": 10.0, "iso_i_trainable": 20.0}, n=10000)
    big_kid = t3_rows({"iso_i_arelbo": 0.05, "iso_i_trainable": 0.01}, metric="kid_gmm10", n=10000)
    assert "fid_gmm10" in verdict_of(ordering(metrics="fid"), big + big_kid)["metrics_used"].split(",")


# ---------------------------------------------------------------------------- values and thresholds


def value_claim(**kw):
    return {
        "id": "v",
        "kind": "value",
        "claim": "c",
        "source": "s",
        "why": "w",
        "table": 3,
        "where": {"dataset": "mnist", "model": "iso_i_arelbo"},
        "metric": "sigma_x2",
        "paper": 0.0056,
        "tolerance": 0.20,
        **kw,
    }


@pytest.mark.parametrize(
    "value, reduced, expected", [(0.0060, False, C.PASS), (0.0090, False, C.FAIL), (0.0060, True, C.NOT_RUN)]
)
def test_value_claims_use_the_tolerance_and_skip_reduced_configs(value, reduced, expected):
    rows = t3_rows({"iso_i_arelbo": value}, metric="sigma_x2", reduced=reduced)
    assert verdict_of(value_claim(), rows)["verdict"] == expected


def test_a_missing_cell_is_not_run():
    assert verdict_of(value_claim(), t3_rows({"vae": 0.0060}, metric="sigma_x2"))["verdict"] == C.NOT_RUN


@pytest.mark.parametrize(
    "value, se, expected",
    [(0.006, 0.001, C.PASS), (0.5, 0.01, C.FAIL), (0.098, 0.01, C.INCONCLUSIVE), (0.0, 0.0, C.PASS)],
)
def test_threshold_claims(value, se, expected):
    claim = {
        "id": "t",
        "kind": "threshold",
        "claim": "c",
        "source": "s",
        "why": "w",
        "table": 3,
        "where": {"dataset": "mnist", "model": "iso_i_arelbo"},
        "metric": "sigma_x2",
        "below": 0.1,
    }
    rows = t3_rows({"iso_i_arelbo": value}, metric="sigma_x2", uncertainty=se)
    assert verdict_of(claim, rows)["verdict"] == expected


# ---------------------------------------------------------------------------- trends


def t1_rows(values: list[float], grid=(0.0, -0.25, -0.5, -0.75, -1.0), metric="kl", seeds=(0,)):
    rows = []
    for x, v in zip(grid, values):
        for seed in seeds:
            rows.append(
                dict(
                    table=1,
                    dataset="mnist",
                    encoding="stochastic",
                    log10_sigma_x2=x,
                    seed=seed,
                    metric=metric,
                    value=v + 0.01 * seed,
                    config="hand",
                    commit="c0",
                    reduced=True,
                )
            )
    return rows


def trend(**kw):
    return {
        "id": "tr",
        "kind": "trend",
        "claim": "c",
        "source": "s",
        "why": "w",
        "table": 1,
        "where": {"encoding": "stochastic"},
        "x": "log10_sigma_x2",
        "metric": "kl",
        "sign": -1,
        **kw,
    }


def test_trend_verdicts_from_the_exact_permutation_test():
    rising = t1_rows([0.0, 3.0, 5.0, 8.0, 9.0])  # KL rises as σx² falls: ρ = −1, p = 1/120
    row = verdict_of(trend(), rising)
    assert row["verdict"] == C.PASS and "p = 0.008" in row["evidence"]
    assert verdict_of(trend(), t1_rows([9.0, 8.0, 5.0, 3.0, 0.0]))["verdict"] == C.FAIL
    assert verdict_of(trend(), t1_rows([0.0, 8.0, 3.0, 9.0, 5.0]))["verdict"] == C.INCONCLUSIVE
    # three grid points can never reach p < 0.05 (1/6 at best): honest, not a pass
    three = t1_rows([0.0, 5.0, 9.0], grid=(0.0, -0.5, -1.0))
    assert verdict_of(trend(), three)["verdict"] == C.INCONCLUSIVE
    assert verdict_of(trend(metric="els"), rising)["verdict"] == C.NOT_RUN


def test_spearman_permutation_p_value_is_exact_for_small_grids():
    rho, p_pos, p_neg = C.spearman_trend(np.arange(5.0), np.arange(5.0))
    assert rho == pytest.approx(1.0) and p_pos == pytest.approx(1 / 120) and p_neg == pytest.approx(1.0)


def test_the_batched_spearman_rho_is_scipys_spearmanr_on_every_pairing():
    """The permutation test scores all pairings in one array operation; each must be scipy's own ρ,
    ties included (average ranks), and the p-values those of the one-call-per-pairing test."""
    from scipy import stats

    rng = np.random.default_rng(3)
    x = np.array([0.0, -0.5, -0.5, -1.0, -1.5, -2.0, -2.0])
    ys = np.round(rng.normal(size=(50, len(x))), 1)  # rounding makes ties in y too
    batched = C.spearman_rho_against(x)(ys)
    assert batched == pytest.approx([stats.spearmanr(x, y).statistic for y in ys], abs=1e-12)
    y = ys[0]
    one_by_one = [
        stats.permutation_test(
            (y,),
            lambda yy: stats.spearmanr(x, yy).statistic,
            permutation_type="pairings",
            alternative=alternative,
            n_resamples=5040,
            rng=np.random.default_rng(0),
        ).pvalue
        for alternative in ("greater", "less")
    ]
    assert C.spearman_trend(x, y)[1:] == pytest.approx(one_by_one, abs=1e-12)


def test_holm_matches_the_textbook_example():
    # p = (0.01, 0.04, 0.03, 0.005): sorted 0.005·4, 0.01·3, 0.03·2, 0.04·1 with the running maximum
    assert C.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    out = C.holm([0.2, math.nan])
    assert out[0] == pytest.approx(0.2) and math.isnan(out[1])


# ---------------------------------------------------------------------------- the claims file


def test_the_claims_file_names_known_models_metrics_and_tables():
    from arelbo.models.objectives import MODELS
    from arelbo.reporting.tables import TABLE_SPECS

    data = C.load_claims()
    for name, members in data["groups"].items():
        assert set(members) <= set(MODELS), name
    for claim in data["claims"]:
        for n in C._tables_of(claim):
            spec = TABLE_SPECS[n]
            metrics = claim.get("metrics", [claim.get("metric")])
            if metrics != "fid":
                assert set(metrics) <= set(spec.metrics), claim["id"]
        models = [m for pair in claim.get("pairs", []) for m in pair]
        models += [m for key in ("lower", "higher") for m in (claim[key] if isinstance(claim.get(key), list) else [])]
        assert set(models) <= set(MODELS), claim["id"]
        assert claim["why"] and claim["source"], claim["id"]


def test_every_paper_cell_with_a_tolerance_is_a_value_claim():
    generated = C.value_claims(C.load_claims())
    ids = [c["id"] for c in generated]
    assert len(ids) == len(set(ids))
    assert "t3:mnist/iso_i_arelbo:fid_gmm10" in ids and "t1:stochastic/-0.5:els" in ids
    assert not [i for i in ids if i.endswith(":mi")]  # MI: an ordering only (docs/design.md §6)
    assert sum(i.startswith("t4:") for i in ids) == 13 * 2 * 2  # every Table 4 cell


def test_a_malformed_claims_file_is_refused_with_what_is_wrong(tmp_path):
    bad = tmp_path / "claims.yaml"
    bad.write_text(
        "claims:\n  - {id: a, kind: ordering, claim: c, source: s, why: w, table: 3, dataset: mnist, "
        "metrics: fid, require: most}\n  - {id: a, kind: guess}\n"
    )
    with pytest.raises(C.ClaimsError) as err:
        C.load_claims(bad)
    text = str(err.value)
    assert "duplicate claim ids" in text and "require must be" in text and "'guess'" in text


# ---------------------------------------------------------------------------- the command


def test_claims_command_writes_csv_and_latex_from_a_results_folder(tmp_path):
    results = tmp_path / "run"
    (results / "tables").mkdir(parents=True)
    rows = t3_rows({"iso_i_arelbo": 10.0, "iso_i_trainable": 20.0, "vae": 30.0}) + t3_rows(
        {"iso_i_arelbo": 0.0057}, metric="sigma_x2", uncertainty=1e-5
    )
    pd.DataFrame(rows).to_csv(results / "tables" / "table3_tidy.csv", index=False)
    out = subprocess.run(
        [sys.executable, "-m", "arelbo", "claims", "--results", str(results)], capture_output=True, text=True, cwd=REPO
    )
    assert out.returncode == 0, out.stderr
    verdicts = pd.read_csv(results / "claims.csv")
    assert set(verdicts["verdict"]) <= set(C.VERDICTS)
    by_id = verdicts.set_index("id")["verdict"]
    assert by_id["sigma-x2-mnist"] == C.PASS and by_id["sigma-x2-celeba"] == C.NOT_RUN
    assert by_id["t1-kl-rises-as-sigma-x2-falls"] == C.NOT_RUN  # no Table 1: listed, not dropped
    assert len(verdicts) == len(C.load_claims()["claims"]) + len(C.value_claims(C.load_claims()))
    tex = (results / "claims.tex").read_text()
    assert r"\begin{tabular}" in tex and "sigma-x2-mnist" in tex and "Value claims" in tex
    assert tex.isascii(), "claims.tex must compile with pdflatex too"
    assert "sigma-x2-mnist" in out.stdout
    missing = subprocess.run(
        [sys.executable, "-m", "arelbo", "claims", "--results", str(tmp_path / "nope")],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert missing.returncode == 2 and "does not exist" in missing.stderr


def test_make_quicks_grids_can_decide_every_trend_claim():
    """config/quick.yaml is sized so that its trend claims can be decided: a perfectly monotone metric
    on its grid reaches p < α (3 points never can: 1/3! = 0.17)."""
    from arelbo.core.config import load_config

    quick = load_config(REPO / "config" / "quick.yaml", check_folders=False)
    grids = {1: quick.section3.table1.log10_sigma_x2, 5: quick.section3.table5.log10_sigma_z2}
    alpha = C.load_claims()["alpha"]
    for claim in C.load_claims()["claims"]:
        if claim["kind"] == "trend":
            x = np.repeat(np.asarray(grids[claim["table"]], float), len(quick.seeds))
            _, p_pos, p_neg = C.spearman_trend(x, x * claim["sign"] + 0.0)
            forward = p_pos if claim["sign"] > 0 else p_neg
            assert forward < alpha, (claim["id"], forward)
    _, p_three, _ = C.spearman_trend(np.array([0.0, -0.5, -1.0]), np.array([0.0, -0.5, -1.0]))
    assert p_three > alpha


def test_the_paper_own_tables_pass_the_claims_file_except_the_documented_cases():
    """Judged on the paper's own numbers (± 0.1), every claim passes but two, both recorded in the notes:
    'competitive on CelebA' fails in the prior column (AR-ELBO 64.40 vs WAE 52.89), and the KL 'nearly
    zero' at σx² = 1 (printed 0.00) cannot be shown below 0.1 with a stand-in uncertainty of 0.1."""
    verdicts = C.judge(C.paper_tidy()).set_index("id")["verdict"]
    exceptions = {"arelbo-competitive-fid-celeba": C.FAIL, "t1-collapse-at-sigma-x2-1": C.INCONCLUSIVE}
    for claim_id, verdict in verdicts.items():
        assert verdict == exceptions.get(claim_id, C.PASS), (claim_id, verdict)
