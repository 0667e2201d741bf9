"""Benchmark files and formats, prompts, graders, answering rows: see benchmark.py and answering.py."""
