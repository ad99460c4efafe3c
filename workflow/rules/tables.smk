# Table assembly: light local jobs over the metric records (pandas + tabulate, no torch).


localrules:
    table,
    resolved_config,
    claims,


rule resolved_config:
    # The user-facing copy of the merged config, written only by a run that holds the lock (the
    # content-addressed file it copies is what the jobs read).
    input:
        CONFIG_FILE,
    output:
        f"{OUT}/config.yaml",
    log:
        f"{LOGS}/resolved_config.log",
    shell:
        "cp {input} {output} 2> {log}"


rule table:
    input:
        metrics=lambda wc: table_inputs(int(wc.n)),
        config=f"{OUT}/config.yaml",
    output:
        tex=f"{OUT}/table{{n}}.tex",
        tidy=f"{OUT}/tables/table{{n}}_tidy.csv",
        paper=report(
            f"{OUT}/tables/table{{n}}_paper.csv",
            caption="../report/table.rst",
            category="Tables",
            labels={"table": "Table {n}"},
        ),
        vs_paper=f"{OUT}/tables/table{{n}}_vs_paper.csv",
    log:
        f"{LOGS}/tables/table{{n}}.log",
    wildcard_constraints:
        n="[34]" if not SECTION3_POINTS else "[1345]",  # Tables 1 and 5 need Section 3 (MNIST)
    params:
        outdir=lambda wc, output: str(Path(output.tex).parent),
        settings=tracked("name", "description", "reduced", "data.celeba.root", "data.celeba.synthetic_standin"),
    shell:
        "{ARELBO} table --config {CONFIG_FILE} --table {wildcards.n} --outdir {params.outdir} {input.metrics} "
        "> {log} 2>&1"


rule claims:
    # Verdicts on the paper's claims from the tidy CSVs of every table this config builds (a claim on a
    # dataset or table it does not build is listed as NOT RUN).
    input:
        [f"{OUT}/tables/table{n}_tidy.csv" for n in built_tables()],
    output:
        csv=report(f"{OUT}/claims.csv", caption="../report/claims.rst", category="1. Claims"),
        tex=f"{OUT}/claims.tex",
    log:
        f"{LOGS}/claims.log",
    params:
        results=lambda wc, output: str(Path(output.csv).parent),
    shell:
        "{ARELBO} claims --config {CONFIG_FILE} --results {params.results} --out-csv {output.csv} "
        "--out-tex {output.tex} > {log} 2>&1"
