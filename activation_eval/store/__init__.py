"""Files: records.py (record codecs), safe_pickle.py, errors.py, atomic.py (atomic writes), run_folder.py (every file name of a run folder). Imports nothing else of the project."""
