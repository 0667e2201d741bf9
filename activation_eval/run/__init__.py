"""Running a benchmark: config.py (RunConfig), runner.py (the loop, resume), distributed.py (several processes),
cli.py (the eval CLI)."""
