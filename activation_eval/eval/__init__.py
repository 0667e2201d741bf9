"""Benchmark files and formats (benchmark.py, benchmark_files.py, rows.py), prompts, gold answers (gold.py),
graders (grading.py), answering rows (answering.py)."""
