"""Files: records.py (record codecs), safe_pickle.py, errors.py, atomic.py (atomic writes), run_folder.py (every
file name of a run folder), shards.py (unit shards), run_records.py (a run's records, either store). Imports nothing
else of the project."""
