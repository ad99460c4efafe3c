"""Table assembly (docs/design.md §7): paper layout, formatting, comparison with the paper, file outputs."""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from arelbo.core import registry
from arelbo.reporting import tables
from arelbo.reporting.tables import (
    TABLE_SPECS,
    compare_with_paper,
    format_number,
    paper_shaped,
    read_paper_table,
    summarise,
    summary_wide,
    tidy_from_records,
    to_latex,
    write_table_outputs,
)

DATA = Path(__file__).parent / "data" / "tables"
SMALL3 = DATA / "table3_small_tidy.csv"


def small3() -> pd.DataFrame:
    return pd.read_csv(SMALL3)


def cells(table: int, rows: list[dict], metrics: dict[str, float], seeds=(1,), **common) -> list[dict]:
    """Records for every row × metric × seed; a metric's value is shifted by 0.5 per extra seed."""
    return [
        {
            "table": table,
            "dataset": "mnist",
            "config": "cfg",
            "commit": "c0",
            **common,
            **row,
            "seed": seed,
            "metric": metric,
            "value": value + 0.5 * i,
        }
        for row in rows
        for metric, value in metrics.items()
        for i, seed in enumerate(seeds)
    ]


def latex_body(tex: str) -> list[list[str]]:
    """The cells of the rows between \\midrule and \\bottomrule."""
    lines = tex.splitlines()
    body = lines[lines.index(r"\midrule") + 1 : lines.index(r"\bottomrule")]
    return [line.removesuffix(r" \\").split(" & ") for line in body]


# ---------------------------------------------------------------------------- specs vs registry and paper


def test_the_registry_is_the_only_id_list():
    """Models, estimators and datasets are listed once, in arelbo.core.registry: the schema, the CLI, the
    workflow and the table layouts read it (no copy kept equal by a test). A list is two ids in a
    row (`"ae", "rae"`, `[mnist, celeba]`); code that singles out one id for what it does (the 2nd
    VAE's GPU rule, Section 3 on MNIST) is not a list."""
    from itertools import permutations

    root = Path(__file__).parents[1]
    kinds = [registry.paper_model_ids(), tuple(registry.ESTIMATORS), registry.DATASETS]
    for rel in (
        "workflow/schemas/config.schema.yaml",
        "workflow/rules/common.smk",
        "workflow/rules/evaluate.smk",
        "arelbo/cli.py",
        "arelbo/reporting/tables.py",
        "arelbo/core/layout.py",
        "arelbo/models/objectives.py",
        "arelbo/models/nets.py",
        "arelbo/models/estimators.py",
        "arelbo/planning/plan.py",
    ):
        text = (root / rel).read_text()
        if rel.endswith("schema.yaml"):  # data.<dataset> and train.<dataset> are sections of their own
            text = text.replace("required: [mnist, celeba]", "")
        listed = [
            (a, b)
            for ids in kinds
            for a, b in permutations(ids, 2)
            if re.search(rf"""(?<![\w-])["']?{re.escape(a)}["']?\s*,\s*["']?{re.escape(b)}["']?(?![\w-])""", text)
        ]
        assert not listed, (rel, listed)
    # the paper's rows and columns, as the registry holds them, are its transcribed tables'
    t3 = read_paper_table(3)
    assert tuple(t3[t3["dataset"] == "mnist"]["model"]) == registry.paper_model_ids()
    assert [c.removeprefix("fid_") for c in t3 if c.startswith("fid_")] == list(registry.ESTIMATORS)


def test_tables_module_does_not_import_torch():
    code = "import sys, arelbo.reporting.tables; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[1])


def test_specs_agree_with_the_reference_tables():
    for n, spec in TABLE_SPECS.items():
        paper = read_paper_table(n)
        displayed = [m for m in spec.metrics if not m.startswith("kid_") and m != "sigma_x2"]
        assert [c for c in paper if c not in spec.keys] == displayed
        if spec.group:
            for _group, part in paper.groupby(spec.group, sort=False):
                assert tuple(part[spec.row]) == spec.rows
        else:
            assert tuple(paper[spec.row]) == spec.rows
    t3 = read_paper_table(3).set_index(["dataset", "model"])
    assert set(t3.index[t3["fid_prior"].isna()]) == {
        (d, m) for d in ("mnist", "celeba") for m in registry.no_prior_models()
    }
    assert t3.loc["mnist", "fid_gmm100"].isna().all() and t3.loc["celeba", "fid_gmm100"].notna().all()
    t1 = read_paper_table(1)
    deterministic = t1[t1["encoding"] == "deterministic"]
    assert (
        deterministic[["kl", "sigma_z2"]].isna().all().all() and t1.drop(columns=["kl", "sigma_z2"]).notna().all().all()
    )
    assert read_paper_table(3).loc[0, ["model", "dataset", "mse"]].tolist() == ["vae", "mnist", 20.25]


# ---------------------------------------------------------------------------- Table 3, hand-checked


def test_table3_latex_equals_the_hand_written_file():
    tex = to_latex(small3(), 3, config_name="ci_small", reduced=True, synthetic_datasets=("celeba",))
    assert tex == (DATA / "table3_small_expected.tex").read_text(encoding="utf-8")


def test_table3_paper_shaped_cells():
    shaped = paper_shaped(small3(), 3)
    expected = pd.DataFrame(
        {
            "label": ["VAE (σx² = 1.0)", "AE", "Iso-I w/ AR-ELBO"],
            "mnist/mse": ["20.50 ± 0.71", "4.40 ± 0.14", "4.40 ± 0.00"],
            "mnist/fid_prior": ["51.00 ± 1.41", "–", "22.50 ± 0.71"],
            "mnist/fid_2ndvae": ["182.00 ± 2.83", "20.50 ± 0.71", "16.00 ± 0.71"],
            "mnist/fid_gmm10": ["59.00 ± 1.41", "13.20 ± 0.28", "12.25 ± 0.35"],
        },
        index=pd.Index(["vae", "ae", "iso_i_arelbo"], name="model"),
    )
    pd.testing.assert_frame_equal(shaped, expected)
    # fid_gmm100 on MNIST stays in the summary but is not one of the paper's MNIST columns
    assert "fid_gmm100" in set(summarise(small3())["metric"])
    assert summary_wide(small3(), 3, "n_seeds").loc["ae", "mnist/fid_prior"] == 0


def test_table3_comparison_with_the_paper():
    got = compare_with_paper(small3(), 3)
    s2 = math.sqrt(2)
    rows = [  # model, metric, paper, reproduced mean, std over the two seeds
        ("vae", "mse", 20.25, 20.5, s2 / 2),
        ("vae", "fid_prior", 55.85, 51.0, s2),
        ("vae", "fid_2ndvae", 182.64, 182.0, 2 * s2),
        ("vae", "fid_gmm10", 58.96, 59.0, s2),
        ("ae", "mse", 4.31, 4.4, 0.1 * s2),
        ("ae", "fid_2ndvae", 20.66, 20.5, s2 / 2),
        ("ae", "fid_gmm10", 13.20, 13.2, 0.2 * s2),
        ("iso_i_arelbo", "mse", 4.40, 4.4, 0.0),
        ("iso_i_arelbo", "fid_prior", 22.78, 22.5, s2 / 2),
        ("iso_i_arelbo", "fid_2ndvae", 15.77, 16.0, s2 / 2),
        ("iso_i_arelbo", "fid_gmm10", 12.21, 12.25, s2 / 4),
    ]
    expected = pd.DataFrame(rows, columns=["model", "metric", "paper", "reproduced", "std"])
    expected.insert(0, "dataset", "mnist")
    expected["n_seeds"] = 2
    expected["abs_delta"] = [0.25, -4.85, -0.64, 0.04, 0.09, -0.16, 0.0, 0.0, -0.28, 0.23, 0.04]
    expected["rel_delta"] = expected["abs_delta"] / expected["paper"]
    expected["note"] = ""  # every row is the paper's (a plugin's would say "not in the paper")
    assert list(got.columns) == list(expected.columns)
    pd.testing.assert_frame_equal(got, expected, check_exact=False, atol=1e-9, rtol=1e-9)
    assert expected.loc[0, "rel_delta"] == pytest.approx(0.25 / 20.25)


# ---------------------------------------------------------------------------- layout rules


def test_bold_marks_the_lowest_per_column_within_each_dataset():
    values = {  # (dataset, model) -> (mid, random)
        ("mnist", "vae"): (60.0, 63.0),
        ("mnist", "ae"): (18.0, 12.0),
        ("mnist", "diag_d_arelbo"): (11.9, 12.5),
        ("celeba", "vae"): (57.0, 55.0),
        ("celeba", "ae"): (50.0, 45.0),
        ("celeba", "diag_d_arelbo"): (46.9, 44.1),
    }
    records = [
        {"table": 4, "dataset": d, "model": m, "seed": 0, "metric": metric, "value": v, "config": "cfg", "commit": "c0"}
        for (d, m), pair in values.items()
        for metric, v in zip(("fid_interp_mid", "fid_interp_random"), pair)
    ]
    tex = to_latex(pd.DataFrame(records[::-1]), 4, config_name="cfg", reduced=False)
    assert r"\multicolumn{2}{c}{MNIST} & \multicolumn{2}{c}{CelebA}" in tex
    assert r"\cmidrule(lr){2-3} \cmidrule(lr){4-5}" in tex
    assert latex_body(tex) == [
        ["VAE ($\\sigma_x^2$ = 1.0)", "60.00", "63.00", "57.00", "55.00"],
        ["AE", "18.00", r"\textbf{12.00}", "50.00", "45.00"],
        ["Diag-D w/ AR-ELBO", r"\textbf{11.90}", "12.50", r"\textbf{46.90}", r"\textbf{44.10}"],
    ]
    assert r"$\pm$" not in "".join(sum(latex_body(tex), []))  # one seed: no std


def test_tables_1_and_5_have_no_bold():
    t1 = cells(1, [{"encoding": "stochastic", "log10_sigma_x2": v} for v in (0.0, -0.5)], {"mse": 5.0, "kl": 1.0})
    t5 = cells(5, [{"log10_sigma_z2": v} for v in (0.0, -0.5)], {"mse": 5.0, "kl": 1.0})
    for n, records in ((1, t1), (5, t5)):
        assert r"\textbf" not in to_latex(pd.DataFrame(records), n, config_name="cfg", reduced=False)


def test_undefined_cells_are_dashes_even_with_a_value():
    tidy = pd.concat(
        [
            small3(),
            pd.DataFrame(
                [
                    {
                        "table": 3,
                        "dataset": "mnist",
                        "model": "ae",
                        "seed": 1,
                        "metric": "fid_prior",
                        "value": 1.0,
                        "config": "ci_small",
                        "commit": "abc123",
                    }
                ]
            ),
        ]
    )
    assert paper_shaped(tidy, 3).loc["ae", "mnist/fid_prior"] == "–"
    assert np.isnan(summary_wide(tidy, 3).loc["ae", "mnist/fid_prior"])
    body = latex_body(to_latex(tidy, 3, config_name="ci_small", reduced=False))
    assert body[1][2] == "--" and body[2][2] == r"\textbf{22.50 $\pm$ 0.71}"


def test_missing_and_nan_cells_are_dashes_and_nan_seeds_are_not_counted():
    records = cells(3, [{"model": "vae"}, {"model": "wae_mmd"}], {"mse": 4.0, "fid_2ndvae": 20.0}, seeds=(1, 2))
    records[0]["value"] = float("nan")  # vae mse seed 1
    records[-1]["value"] = records[-2]["value"] = None  # both wae_mmd fid_2ndvae seeds
    tidy = tidy_from_records(records)
    shaped = paper_shaped(tidy, 3)
    assert shaped.loc["vae", "mnist/mse"] == "4.50"  # one finite seed: no ± part
    assert shaped.loc["wae_mmd", "mnist/fid_2ndvae"] == "–"
    assert shaped.loc["vae", "mnist/fid_gmm10"] == "–"  # never evaluated
    summary = summarise(tidy).set_index(["model", "metric"])
    assert summary.loc[("vae", "mse"), "n_seeds"] == 1 and np.isnan(summary.loc[("vae", "mse"), "std"])
    assert summary.loc[("wae_mmd", "fid_2ndvae"), "n_seeds"] == 0


def test_celeba_block_follows_mnist_and_shows_gmm100():
    records = cells(
        3, [{"model": "iso_d_arelbo", "dataset": "celeba"}], dict.fromkeys(TABLE_SPECS[3].columns["celeba"], 50.0)
    ) + cells(3, [{"model": "vae", "dataset": "mnist"}], dict.fromkeys(TABLE_SPECS[3].columns["celeba"], 60.0))
    shaped = paper_shaped(pd.DataFrame(records), 3)
    assert list(shaped.index) == ["vae", "iso_d_arelbo"]
    assert list(shaped.columns[1:]) == [f"mnist/{m}" for m in TABLE_SPECS[3].columns["celeba"][:4]] + [
        f"celeba/{m}" for m in TABLE_SPECS[3].columns["celeba"]
    ]
    assert shaped.loc["vae", "celeba/mse"] == "–"
    tex = to_latex(pd.DataFrame(records), 3, config_name="cfg", reduced=False)
    assert r"\begin{tabular}{lrrrrrrrrr}" in tex and "FID GMM-100 \\\\" in tex


@pytest.mark.parametrize("reduced", [True, False])
@pytest.mark.parametrize("synthetic", [(), ("celeba",)])
def test_caption_names_config_reduction_and_synthetic_data(reduced, synthetic):
    records = cells(3, [{"model": "vae", "dataset": "celeba"}, {"model": "vae"}], {"mse": 1.0})
    tex = to_latex(pd.DataFrame(records), 3, config_name="quick", reduced=reduced, synthetic_datasets=synthetic)
    caption = next(line for line in tex.splitlines() if line.startswith(r"\caption{"))
    assert caption.startswith(r"\caption{Reproduction of Table 3 (config: quick): ")
    assert ("Reduced configuration: these numbers are not comparable with the paper." in caption) == reduced
    assert ("CelebA here is a synthetic stand-in." in caption) == bool(synthetic)
    assert "MNIST here is" not in caption
    assert tex.startswith("\\begin{table}[htbp]\n") and tex.endswith("\\end{table}\n")
    assert "\\label{tab:table3}" in tex
    # a synthetic CelebA is not mentioned by a table that has no CelebA
    only_mnist = to_latex(
        pd.DataFrame(records[1:]), 3, config_name="quick", reduced=reduced, synthetic_datasets=synthetic
    )
    assert "synthetic" not in only_mnist
    with pytest.raises(ValueError, match="CelebA"):
        to_latex(pd.DataFrame(records), 3, config_name="quick", reduced=reduced, synthetic_datasets=("CelebA",))


def test_table1_shape_and_order():
    stochastic = {
        "mse": 52.74,
        "kl": 0.0,
        "sigma_z2": 0.0956,
        "mi": 0.03,
        "gap_1e-2": 6.31e-5,
        "gap_1e-3": 0.108,
        "els": 11.4,
    }
    deterministic = {"mse": 5.95, "mi": 12.5, "gap_1e-2": 74.6, "gap_1e-3": 25.3, "els": 743.0}
    keys = (-1.0, 0.0, -0.5)
    records = cells(1, [{"encoding": "deterministic", "log10_sigma_x2": v} for v in keys], deterministic) + cells(
        1, [{"encoding": "stochastic", "log10_sigma_x2": v} for v in keys], stochastic
    )
    shaped = paper_shaped(pd.DataFrame(records), 1)
    assert list(shaped.index) == [0.0, -0.5, -1.0] and shaped.index.name == "log10_sigma_x2"
    assert list(shaped.columns) == [f"stochastic/{m}" for m in stochastic] + [
        f"deterministic/{m}" for m in deterministic
    ]
    assert shaped.iloc[0].tolist() == [
        "52.74",
        "0.00",
        "9.56e-2",
        "3.00e-2",
        "6.31e-5",
        "1.08e-1",
        "11.40",
        "5.95",
        "12.50",
        "74.60",
        "25.30",
        "743.00",
    ]
    tex = to_latex(pd.DataFrame(records), 1, config_name="cfg", reduced=False)
    assert r" & \multicolumn{7}{c}{Stochastic encoding} & \multicolumn{5}{c}{Deterministic encoding} \\" in tex
    assert (
        r"$\log_{10}\sigma_x^2$ & MSE & KL & $\sigma_z^2$ & MI & Gap $10^{-2}$ & Gap $10^{-3}$ & ELS & MSE & MI" in tex
    )
    assert [row[0] for row in latex_body(tex)] == ["0.0", "$-$0.5", "$-$1.0"]


def test_table5_shape_and_order():
    metrics = {"mse": 7.05, "kl": 66.14, "mi": 760.0, "gap_1e-2": 0.228, "gap_1e-3": 0.023, "els": 1.45}
    records = cells(5, [{"log10_sigma_z2": v} for v in (-1.0, 1.0, 0.3, 0.0)], metrics, seeds=(0, 1, 2))
    shaped = paper_shaped(pd.DataFrame(records), 5)
    assert list(shaped.index) == [1.0, 0.3, 0.0, -1.0] and list(shaped.columns) == list(metrics)
    assert shaped.loc[1.0, "gap_1e-3"] == "5.23e-1 ± 5.00e-1"  # 0.023, 0.523, 1.023
    assert shaped.loc[1.0, "els"] == "1.95 ± 0.50"
    tex = to_latex(pd.DataFrame(records), 5, config_name="cfg", reduced=False)
    assert r"\multicolumn" not in tex and r"\cmidrule" not in tex
    assert (
        "\\toprule\n$\\log_{10}\\sigma_z^2$ & MSE & KL & MI & Gap $10^{-2}$ & Gap $10^{-3}$ & ELS \\\\\n\\midrule"
        in tex
    )
    assert [row[0] for row in latex_body(tex)] == ["1.0", "0.3", "0.0", "$-$1.0"]


@pytest.mark.parametrize(
    "x, text",
    [
        (20.25, "20.25"),
        (121.914, "121.91"),
        (0.0, "0.00"),
        (1.0, "1.00"),
        (9999.0, "9999.00"),
        (6.31e-5, "6.31e-5"),
        (0.0956, "9.56e-2"),
        (0.999, "9.99e-1"),
        (12345.0, "1.23e+4"),
        (-0.5, "-5.00e-1"),
        (-3.0, "-3.00"),
    ],
)
def test_format_number(x, text):
    assert format_number(x) == text


# ---------------------------------------------------------------------------- comparison keys


def test_compare_matches_float_keys_to_the_papers_grid():
    records = cells(
        1,
        [
            {"encoding": "stochastic", "log10_sigma_x2": -0.5000001},
            {"encoding": "stochastic", "log10_sigma_x2": -0.25},  # not a paper row
            {"encoding": "deterministic", "log10_sigma_x2": -1.0},
        ],
        {"mse": 10.0, "kl": 15.0},
    )
    got = compare_with_paper(pd.DataFrame(records), 1)
    assert got[["encoding", "log10_sigma_x2", "metric"]].values.tolist() == [
        ["stochastic", -0.5, "mse"],
        ["stochastic", -0.5, "kl"],
        ["deterministic", -1.0, "mse"],
    ]
    assert got["paper"].tolist() == [10.18, 15.30, 5.01]  # deterministic kl: empty in the paper
    assert got["abs_delta"].tolist() == pytest.approx([10.0 - 10.18, 15.0 - 15.30, 10.0 - 5.01])


def test_relative_delta_is_nan_where_the_paper_has_zero():
    got = compare_with_paper(
        pd.DataFrame(cells(1, [{"encoding": "stochastic", "log10_sigma_x2": 0.0}], {"kl": 0.5})), 1
    )
    assert got["paper"].tolist() == [0.0] and got["abs_delta"].tolist() == [0.5] and np.isnan(got.loc[0, "rel_delta"])


# ---------------------------------------------------------------------------- files


def test_outputs_are_byte_identical_whatever_the_row_order(tmp_path):
    tidy = small3()
    first = write_table_outputs(tidy, 3, tmp_path / "a", config_name="ci_small", reduced=True)
    second = write_table_outputs(
        tidy.sample(frac=1.0, random_state=0), 3, tmp_path / "b", config_name="ci_small", reduced=True
    )
    assert {k: p.relative_to(tmp_path / "a").as_posix() for k, p in first.items()} == {
        "tex": "table3.tex",
        "tidy": "tables/table3_tidy.csv",
        "paper": "tables/table3_paper.csv",
        "vs_paper": "tables/table3_vs_paper.csv",
    }
    for kind in first:
        assert first[kind].read_bytes() == second[kind].read_bytes(), kind
    assert first["tex"].read_text(encoding="utf-8") == (DATA / "table3_small_expected.tex").read_text(encoding="utf-8")
    written = pd.read_csv(first["tidy"])
    assert list(written.columns) == ["table", "dataset", "model", "seed", "metric", "value", "config", "commit"]
    pd.testing.assert_frame_equal(tables.check_tidy(written), tables.check_tidy(tidy))
    paper_csv = first["paper"].read_text(encoding="utf-8").splitlines()
    assert paper_csv[0] == "model,label,mnist/mse,mnist/fid_prior,mnist/fid_2ndvae,mnist/fid_gmm10"
    assert paper_csv[2] == "ae,AE,4.40 ± 0.14,–,20.50 ± 0.71,13.20 ± 0.28"
    assert (
        first["vs_paper"].read_text().splitlines()[1] == "mnist,vae,mse,20.25,20.5,0.7071067812,2,0.25,0.01234567901,"
    )


# ---------------------------------------------------------------------------- bad input


def _bad(change):
    records = small3().to_dict("records")
    change(records)
    return records


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda r: [x.pop("seed") for x in r], "lacks required column.*seed"),
        (lambda r: r[0].update(metric="fid_foo"), r"unknown metric value\(s\) \['fid_foo'\]"),
        (lambda r: r[0].update(model="vae2"), r"unknown model value\(s\) \['vae2'\]"),
        (lambda r: r[0].update(dataset="cifar"), r"unknown dataset value\(s\) \['cifar'\]"),
        (lambda r: r[0].update(table=2), r"unknown table number\(s\) \['2'\]"),
        (lambda r: r[0].update(model=None), r"Table 3: column\(s\) model missing or empty"),
        (lambda r: r[0].update(value="n/a"), "column value has non-numeric values"),
        (lambda r: r[0].update(seed=1.5), "column seed has non-integer values"),
        (lambda r: r[0].update(config="other"), "several configs"),
        (lambda r: r.append(dict(r[0])), "share their key, seed and metric"),
    ],
)
def test_bad_tidy_records_raise_clear_errors(change, message):
    with pytest.raises(ValueError, match=message):
        tidy_from_records(_bad(change))


def test_table1_records_need_their_keys():
    records = cells(1, [{"encoding": "stochastic", "log10_sigma_x2": 0.0}], {"mse": 1.0})
    with pytest.raises(ValueError, match=r"Table 1: column\(s\) encoding missing or empty"):
        tidy_from_records([{k: v for k, v in r.items() if k != "encoding"} for r in records])
    with pytest.raises(ValueError, match=r"unknown encoding value\(s\) \['sampled'\]"):
        tidy_from_records([{**r, "encoding": "sampled"} for r in records])
    with pytest.raises(ValueError, match="no rows for Table 5"):
        paper_shaped(tidy_from_records(records), 5)


def test_a_model_is_scored_on_its_datasets_table3_columns_and_the_interpolations():
    from arelbo.core import layout

    assert layout.scored_samplers(["gmm100", "prior", "gmm10"], "mnist", has_prior=False) == [
        "gmm10",
        "interp_mid",
        "interp_random",
    ]
    assert layout.scored_samplers(["gmm100", "prior", "gmm10"], "celeba", has_prior=True) == [
        "gmm100",
        "prior",
        "gmm10",
        "interp_mid",
        "interp_random",
    ]
    assert {
        d: tuple(m.removeprefix("fid_") for m in cols if m.startswith("fid_"))
        for d, cols in TABLE_SPECS[3].columns.items()
    } == {"mnist": ("prior", "2ndvae", "gmm10"), "celeba": ("prior", "2ndvae", "gmm10", "gmm100")}  # docs/design.md §7


def test_kid_twin_table_states_sizes_and_shows_subset_std_for_one_seed():
    """Next to every FID, KID ×10³ (± its std over subsets for one seed); both captions state N
    generated and N reference; extra record columns (uncertainty, sizes, provenance) reach the tidy CSV."""
    common = {"n_samples": 32, "n_reference": 500, "uncertainty": 0.002, "config_hash": "h1"}
    records = cells(
        4, [{"model": "vae"}, {"model": "ae"}], {"fid_interp_mid": 80.0, "fid_interp_random": 70.0}, **common
    )
    records += cells(
        4, [{"model": "vae"}, {"model": "ae"}], {"kid_interp_mid": 0.031, "kid_interp_random": 0.024}, **common
    )
    tidy = tidy_from_records(records)
    assert {"uncertainty", "n_samples", "n_reference", "config_hash"} <= set(tidy.columns)
    tex = to_latex(tidy, 4, config_name="cfg", reduced=True)
    assert tex.count(r"\begin{table}") == 2 and r"\label{tab:table4-kid}" in tex
    assert tex.count(r"$N_{gen} = 32$ generated vs $N_{ref} = 500$") == 2
    kid_rows = latex_body(tex[tex.index("tab:table4-kid") :])
    assert kid_rows[0][1] == r"\textbf{31.00 $\pm$ 2.00}"  # 0.031 ×10³ ± 0.002 ×10³ (one seed: subsets)
    shaped = paper_shaped(tidy, 4)
    assert shaped.loc["vae", "mnist/kid_interp_mid (x1e3)"] == "31.00 ± 2.00"
    assert "Mixed provenance" not in tex


def test_tables_say_when_their_records_come_from_several_commits_or_configs():
    records = cells(4, [{"model": "vae"}], {"fid_interp_mid": 80.0, "fid_interp_random": 70.0}, config_hash="aaaa")
    records[0] = {**records[0], "commit": "c1", "config_hash": "bbbb"}
    tex = to_latex(tidy_from_records(records), 4, config_name="cfg", reduced=True)
    assert "Mixed provenance: built from records of 2 commits (c0, c1)" in tex
    assert "2 config hashes (aaaa, bbbb)" in tex
