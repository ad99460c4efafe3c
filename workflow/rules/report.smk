# Plots for `snakemake --report`: the paper comparisons and training curves (matplotlib, no torch).


localrules:
    comparison_plot,
    training_curves,
    measured_costs,


rule comparison_plot:
    input:
        layout.table_csv(OUT, "{n}", "vs_paper"),
    output:
        report(
            layout.figure_path(OUT, "table{n}_vs_paper"),
            caption="../report/comparison.rst",
            category="Paper comparison",
            labels={"table": "Table {n}"},
        ),
    log:
        layout.job_log(LOGS, "figures", "table{n}_vs_paper"),
    wildcard_constraints:
        n="[1345]",
    params:
        settings=tracked("name", "reduced"),
    shell:
        "{ARELBO} plot comparison --config {CONFIG_FILE:q} --table {wildcards.n} --input {input:q} --out {output:q} > {log:q} 2>&1"


rule training_curves:
    input:
        _curve_logs,
    output:
        report(
            layout.figure_path(OUT, "training_curves_{what}"),
            caption="../report/curves.rst",
            category="Training curves",
            labels={"runs": "{what}"},
        ),
    log:
        layout.job_log(LOGS, "figures", "training_curves_{what}"),
    wildcard_constraints:
        what="|".join(list(CFG.datasets) + ["section3"]),
    params:
        settings=tracked("name", "reduced"),
    shell:
        "{ARELBO} plot curves --config {CONFIG_FILE:q} --out {output:q} --input {input:q} > {log:q} 2>&1"


rule measured_costs:
    # What the run cost, per job, stage and Table 3/4 row, from the benchmark files of every job before
    # it (its inputs are the last outputs of the DAG: the tables, the figures and the claims).
    input:
        [layout.table_csv(OUT, n, "tidy") for n in built_tables()]
        + section3_targets()
        + [layout.claims_path(OUT, "csv")],
    output:
        report(layout.costs_path(OUT), caption="../report/costs.rst", category="Cost"),
    log:
        layout.job_log(LOGS, "costs"),
    params:
        logs=LOGS,
    shell:
        "{ARELBO} costs --logs {params.logs:q} --out {output:q} > {log:q} 2>&1"
