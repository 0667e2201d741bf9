"""Analysis of saved records: arrays.py, dataset.py (load_run_layer, reduce=), stats.py, probe.py (+ controls.py, bootstrap.py), plots.py, cli.py."""
