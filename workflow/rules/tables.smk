# Table assembly: light local jobs over the metric records (pandas + tabulate, no torch).


localrules:
    table,


def table_inputs(n):
    return sweep_criteria_files(n) if n in (1, 5) else table_metric_files(n)


rule table:
    input:
        lambda wc: table_inputs(int(wc.n)),
    output:
        tex=f"{OUT}/table{{n}}.tex",
        tidy=f"{OUT}/tables/table{{n}}_tidy.csv",
        paper=report(f"{OUT}/tables/table{{n}}_paper.csv", caption="../report/table.rst", category="Tables",
                     labels={"table": "Table {n}"}),
        vs_paper=f"{OUT}/tables/table{{n}}_vs_paper.csv",
    wildcard_constraints:
        n="[34]" if not SWEEP_POINTS else "[1345]",  # Tables 1 and 5 need Section 3 (MNIST)
    log:
        f"{LOGS}/tables/table{{n}}.log",
    shell:
        "{ARELBO} table --config {CONFIG_FILE} --table {wildcards.n} --outdir {OUT} {input} > {log} 2>&1"
