"""Analysis of saved records. Every mode's result is a typed contract of activation_eval/schema/.

    cli.py          the command line: parses, dispatches to commands/ (one module per mode), prints
    commands/       file, directory, compare, probe, lens, report, export: options, result, text, plots
    arrays.py       a record as float64 arrays; a run's layer names
    dataset.py      one vector per question for a layer (load_run_layer, load_run_positions, reduce=)
    stats.py        per-layer statistics of records, folders and pairs of records
    probe/          linear probes with controls, the verdict, operating points, transfer
    lens/           the logit lens
    stratify.py     correct vs incorrect within strata (category, or a named field)
    intervals.py    bootstrap intervals of statistics
    plots.py, pca.py, plot_base.py     record plots, the run-folder PCA, what plots share
    report.py       the HTML run report (html.py: its pieces)
    export_hf.py    a datasets folder
    text.py, jsonio.py                 text tables; results as JSON and back
"""
