# Plots for `snakemake --report`: the paper comparisons and training curves (matplotlib, no torch).


localrules:
    comparison_plot,
    training_curves,


def _curve_logs(wildcards):
    if wildcards.what == "section3":
        return [f"{layout.sweep_dir(OUT, pid, seed)}/train_log.csv" for pid in SWEEP_POINTS for seed in CFG.seeds]
    return [f"{OUT}/models/{wildcards.what}/{model}/seed{seed}/train_log.csv"
            for model in CFG.models for seed in CFG.seeds]


rule comparison_plot:
    input:
        f"{OUT}/tables/table{{n}}_vs_paper.csv",
    output:
        report(f"{OUT}/figures/table{{n}}_vs_paper.png", caption="../report/comparison.rst",
               category="Paper comparison", labels={"table": "Table {n}"}),
    wildcard_constraints:
        n="[1345]",
    log:
        f"{LOGS}/figures/table{{n}}_vs_paper.log",
    shell:
        "{ARELBO} plot comparison --config {CONFIG_FILE} --table {wildcards.n} --input {input} --out {output} > {log} 2>&1"


rule training_curves:
    input:
        _curve_logs,
    output:
        report(f"{OUT}/figures/training_curves_{{what}}.png", caption="../report/curves.rst",
               category="Training curves", labels={"runs": "{what}"}),
    wildcard_constraints:
        what="|".join(list(CFG.datasets) + ["section3"]),
    log:
        f"{LOGS}/figures/training_curves_{{what}}.log",
    shell:
        "{ARELBO} plot curves --config {CONFIG_FILE} --out {output} --input {input} > {log} 2>&1"


def report_targets():
    tables = [n for n in (1, 3, 4, 5) if f"{OUT}/table{n}.tex" in all_targets() + section3_targets()]
    curves = list(CFG.datasets) + (["section3"] if SWEEP_POINTS else [])
    return ([f"{OUT}/figures/table{n}_vs_paper.png" for n in tables]
            + [f"{OUT}/figures/training_curves_{what}.png" for what in curves])
