# Plots for `snakemake --report`: the paper comparisons and training curves (matplotlib, no torch).


localrules:
    comparison_plot,
    training_curves,


rule comparison_plot:
    input:
        f"{OUT}/tables/table{{n}}_vs_paper.csv",
    output:
        report(f"{OUT}/figures/table{{n}}_vs_paper.png", caption="../report/comparison.rst",
               category="Paper comparison", labels={"table": "Table {n}"}),
    wildcard_constraints:
        n="[1345]",
    params:
        settings=tracked("name", "reduced"),
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
    params:
        settings=tracked("name", "reduced"),
    log:
        f"{LOGS}/figures/training_curves_{{what}}.log",
    shell:
        "{ARELBO} plot curves --config {CONFIG_FILE} --out {output} --input {input} > {log} 2>&1"


