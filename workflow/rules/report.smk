# Plots for `snakemake --report`: the paper comparisons and training curves (matplotlib, no torch).


localrules:
    comparison_plot,
    training_curves,
    measured_costs,


rule comparison_plot:
    input:
        f"{OUT}/tables/table{{n}}_vs_paper.csv",
    output:
        report(
            f"{OUT}/figures/table{{n}}_vs_paper.png",
            caption="../report/comparison.rst",
            category="Paper comparison",
            labels={"table": "Table {n}"},
        ),
    log:
        f"{LOGS}/figures/table{{n}}_vs_paper.log",
    wildcard_constraints:
        n="[1345]",
    params:
        settings=tracked("name", "reduced"),
    shell:
        "{ARELBO} plot comparison --config {CONFIG_FILE} --table {wildcards.n} --input {input} --out {output} > {log} 2>&1"


rule training_curves:
    input:
        _curve_logs,
    output:
        report(
            f"{OUT}/figures/training_curves_{{what}}.png",
            caption="../report/curves.rst",
            category="Training curves",
            labels={"runs": "{what}"},
        ),
    log:
        f"{LOGS}/figures/training_curves_{{what}}.log",
    wildcard_constraints:
        what="|".join(list(CFG.datasets) + ["section3"]),
    params:
        settings=tracked("name", "reduced"),
    shell:
        "{ARELBO} plot curves --config {CONFIG_FILE} --out {output} --input {input} > {log} 2>&1"


rule measured_costs:
    # What the run cost, per job, stage and Table 3/4 row, from the benchmark files of every job before
    # it (its inputs are the last outputs of the DAG: the tables, the figures and the claims).
    input:
        [f"{OUT}/tables/table{n}_tidy.csv" for n in built_tables()] + section3_targets() + [f"{OUT}/claims.csv"],
    output:
        report(f"{OUT}/costs.csv", caption="../report/costs.rst", category="Cost"),
    log:
        f"{LOGS}/costs.log",
    params:
        logs=LOGS,
    shell:
        "{ARELBO} costs --logs {params.logs} --out {output} > {log} 2>&1"
