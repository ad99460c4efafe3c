# Table assembly: light local jobs over the metric records (pandas + tabulate, no torch).


localrules:
    table,
    resolved_config,
    claims,


rule resolved_config:
    # The user-facing copy of the merged config, written only by a run that holds the lock. It copies
    # the content-addressed file the jobs read, which the run writes when it starts (common.smk's
    # `onstart`), so it is not an input a dry run would miss; its name is a param instead, so a
    # changed config re-runs this rule.
    output:
        layout.user_config(OUT),
    log:
        layout.job_log(LOGS, "resolved_config"),
    params:
        resolved=CONFIG_FILE,
    shell:
        "cp {params.resolved:q} {output:q} 2> {log:q}"


rule table:
    input:
        metrics=lambda wc: table_inputs(int(wc.n)),
        config=layout.user_config(OUT),
    output:
        tex=layout.table_tex(OUT, "{n}"),
        tidy=layout.table_csv(OUT, "{n}", "tidy"),
        paper=report(
            layout.table_csv(OUT, "{n}", "paper"),
            caption="../report/table.rst",
            category="Tables",
            labels={"table": "Table {n}"},
        ),
        vs_paper=layout.table_csv(OUT, "{n}", "vs_paper"),
    log:
        layout.job_log(LOGS, "tables", "table{n}"),
    wildcard_constraints:
        n="[34]" if not SECTION3_POINTS else "[1345]",  # Tables 1 and 5 need Section 3 (MNIST)
    params:
        outdir=lambda wc, output: str(Path(output.tex).parent),
        # not `description`: nothing in a table depends on it (a reader's note, in config.yaml)
        settings=tracked("name", "reduced", "data.celeba.root", "data.celeba.synthetic_standin"),
    shell:
        "{ARELBO} table --config {CONFIG_FILE:q} --table {wildcards.n} --outdir {params.outdir:q} {input.metrics:q} "
        "> {log:q} 2>&1"


rule claims:
    # Verdicts on the paper's claims from the tidy CSVs of every table this config builds (a claim on a
    # dataset or table it does not build is listed as NOT RUN).
    input:
        [layout.table_csv(OUT, n, "tidy") for n in built_tables()],
    output:
        csv=report(layout.claims_path(OUT, "csv"), caption="../report/claims.rst", category="1. Claims"),
        tex=layout.claims_path(OUT, "tex"),
    log:
        layout.job_log(LOGS, "claims"),
    params:
        results=lambda wc, output: str(Path(output.csv).parent),
    shell:
        "{ARELBO} claims --config {CONFIG_FILE:q} --results {params.results:q} --out-csv {output.csv:q} "
        "--out-tex {output.tex:q} > {log:q} 2>&1"
