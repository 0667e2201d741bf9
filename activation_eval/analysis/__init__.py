"""Analysis of saved records: arrays.py, dataset.py (load_run_layer, reduce=), stats.py, probe.py, plots.py, export_hf.py (a datasets folder), cli.py."""
