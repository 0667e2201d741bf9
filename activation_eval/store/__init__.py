"""Files: records.py (record codecs), safe_pickle.py (+ pickle_globals.py, bounded_unpickler.py), checks.py (the
generic checks of every reader), safetensors_file.py, errors.py, atomic.py (atomic writes), run_folder.py
(every file name of a run folder), shards.py (unit shards), run_reader.py (the one reader of a run's rows and
records, either store). Imports nothing else of the project but the leaves dtypes.py and schema.py."""
