# Section 3 study: one training job and one criteria job per grid point × seed (Tables 1 and 5),
# and the figures drawn from the grid points they show.
import re

# Section 3 is an MNIST study (the Appendix D net on MNIST's training split): without MNIST in
# `datasets` it is absent from the DAG, and the workflow says so once.
SWEEP_POINTS = {p.id: p for p in layout.grid_points(CFG.section3)} if "mnist" in CFG.datasets else {}
if "mnist" not in CFG.datasets:
    logger.info("Section 3 (Tables 1 and 5, Figures 1-3) is an MNIST study; `datasets` has no mnist, so it "
                "is left out. Add mnist to `datasets` to run it.")
SWEEP_DIR = f"{OUT}/sweeps/{{point}}/seed{{seed}}"
FIGS = CFG.section3.figures


wildcard_constraints:
    point="|".join(re.escape(p) for p in SWEEP_POINTS) or "none",


def sweep_model(point_id, seed):
    return f"{layout.sweep_dir(OUT, point_id, seed)}/model.pt"


def sweep_criteria_files(table):
    return [f"{layout.sweep_dir(OUT, pid, seed)}/criteria.json"
            for pid, p in SWEEP_POINTS.items() if p.table == table for seed in CFG.seeds]


def figure_points(number):
    """Grid point ids a figure shows (config section3.figures; checked against the grid)."""
    if number == 1:
        return [p.id for p in SWEEP_POINTS.values() if p.table == 1
                and any(abs(p.log10_sigma_x2 - v) < 1e-9 for v in FIGS.figure1_log10_sigma_x2)]
    if number == 2:
        return [p.id for p in SWEEP_POINTS.values() if p.table == 1 and p.encoding == "stochastic"
                and any(abs(p.log10_sigma_x2 - v) < 1e-9 for v in FIGS.figure2_log10_sigma_x2)]
    return [p.id for p in SWEEP_POINTS.values() if p.table == 5
            and any(abs(p.log10_sigma_z2 - v) < 1e-9 for v in FIGS.figure3_log10_sigma_z2)]


def section3_targets():
    targets = []
    if any(p.table == 1 for p in SWEEP_POINTS.values()):
        targets.append(f"{OUT}/table1.tex")
    if any(p.table == 5 for p in SWEEP_POINTS.values()):
        targets.append(f"{OUT}/table5.tex")
    targets += [f"{OUT}/figures/figure{n}.png" for n in (1, 2, 3) if figure_points(n)]
    return targets


rule sweep_train:
    input:
        data=lambda wc: dataset_meta("mnist"),
    output:
        model=f"{SWEEP_DIR}/model.pt",
        log=f"{SWEEP_DIR}/train_log.csv",
    params:
        # recorded by Snakemake: changing the study's training settings re-runs the grid
        settings=lambda wc: {**(CFG.raw.get("section3") or {}).get("train", {}),
                             "train_limit": (CFG.raw.get("section3") or {}).get("train_limit"),
                             "limit": CFG.raw["data"]["mnist"].get("limit")},
        outdir=lambda wc, output: str(Path(output.model).parent),
    log:
        f"{LOGS}/sweeps/{{point}}/seed{{seed}}/train.log",
    benchmark:
        f"{LOGS}/benchmarks/sweeps/{{point}}/seed{{seed}}/train.tsv"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=360,
        gpu=1,
    shell:
        "{ARELBO} sweep-train --config {CONFIG_FILE} --point {wildcards.point} --seed {wildcards.seed} "
        "--out {params.outdir} --threads {threads} --no-progress > {log} 2>&1"


rule sweep_criteria:
    input:
        model=f"{SWEEP_DIR}/model.pt",
    output:
        f"{SWEEP_DIR}/criteria.json",
    log:
        f"{LOGS}/sweeps/{{point}}/seed{{seed}}/criteria.log",
    benchmark:
        f"{LOGS}/benchmarks/sweeps/{{point}}/seed{{seed}}/criteria.tsv"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=60,
        gpu=1,
    shell:
        "{ARELBO} criteria --config {CONFIG_FILE} --model-file {input.model} --seed {wildcards.seed} "
        "--out {output} --threads {threads} > {log} 2>&1"


rule figure:
    # Figure 1 (perturbed decodings) and Figures 2/3 (t-SNE) from the first seed's models
    input:
        lambda wc: [sweep_model(pid, CFG.seeds[0]) for pid in figure_points(int(wc.number))],
    output:
        report(f"{OUT}/figures/figure{{number}}.png", caption="../report/figure.rst", category="Section 3 figures",
               labels={"figure": "Figure {number}"}),
    params:
        seed=CFG.seeds[0],
    log:
        f"{LOGS}/figures/figure{{number}}.log",
    benchmark:
        f"{LOGS}/benchmarks/figures/figure{{number}}.tsv"
    wildcard_constraints:
        number="[123]",
    threads: 2
    resources:
        mem_mb=8000,
        runtime=30,
        gpu=1,  # decodes and encodes with the grid points' networks on the config's device
    shell:
        "{ARELBO} figure {wildcards.number} --config {CONFIG_FILE} --models {input} --seed {params.seed} "
        "--out {output} > {log} 2>&1"
