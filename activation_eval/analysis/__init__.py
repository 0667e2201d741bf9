"""Analysis of saved records: arrays.py, dataset.py (load_run_layer, reduce=), stats.py, intervals.py,
probe.py (+ controls.py, bootstrap.py, operating_points.py), lens.py (logit lens), plots.py, report.py (HTML run report),
export_hf.py (a datasets folder), cli.py."""
