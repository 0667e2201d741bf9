"""Analysis of saved records: arrays.py, dataset.py (load_run_layer, load_run_positions, reduce=), stats.py,
intervals.py, probe.py (+ controls.py, folds.py, probe_models.py, bootstrap.py, operating_points.py,
transfer.py), stratify.py (correct vs incorrect within strata), lens.py (logit lens), plots.py, report.py
(HTML run report), export_hf.py (a datasets folder), cli.py."""
