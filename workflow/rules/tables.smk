# Table assembly: light local jobs over the metric records (pandas + tabulate, no torch).


localrules:
    table1,
    table3,
    table4,
    table5,


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


rule table1:
    input:
        lambda wc: sweep_criteria_files(1),
    output:
        tex=f"{OUT}/table1.tex",
        csv=[f"{OUT}/tables/table1_{kind}.csv" for kind in ("tidy", "paper", "vs_paper")],
    log:
        f"{LOGS}/tables/table1.log",
    shell:
        "{ARELBO} table --config {CONFIG_FILE} --table 1 --outdir {OUT} {input} > {log} 2>&1"


rule table5:
    input:
        lambda wc: sweep_criteria_files(5),
    output:
        tex=f"{OUT}/table5.tex",
        csv=[f"{OUT}/tables/table5_{kind}.csv" for kind in ("tidy", "paper", "vs_paper")],
    log:
        f"{LOGS}/tables/table5.log",
    shell:
        "{ARELBO} table --config {CONFIG_FILE} --table 5 --outdir {OUT} {input} > {log} 2>&1"
