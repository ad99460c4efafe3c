# Table assembly: light local jobs over the metric records (pandas + tabulate, no torch).


localrules:
    table3,
    table4,


rule table3:
    input:
        lambda wc: table_metric_files(3),
    output:
        tex=f"{OUT}/table3.tex",
        csv=[f"{OUT}/tables/table3_{kind}.csv" for kind in ("tidy", "paper", "vs_paper")],
    log:
        f"{LOGS}/tables/table3.log",
    shell:
        "{ARELBO} table --config {CONFIG_FILE} --table 3 --outdir {OUT} {input} > {log} 2>&1"


rule table4:
    input:
        lambda wc: table_metric_files(4),
    output:
        tex=f"{OUT}/table4.tex",
        csv=[f"{OUT}/tables/table4_{kind}.csv" for kind in ("tidy", "paper", "vs_paper")],
    log:
        f"{LOGS}/tables/table4.log",
    shell:
        "{ARELBO} table --config {CONFIG_FILE} --table 4 --outdir {OUT} {input} > {log} 2>&1"
