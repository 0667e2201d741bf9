"""What --resume checks before it continues a run: the benchmark is still the one the run asked,
and every answered row's record file is still there.

Public names:
    benchmark_fingerprint(path, rows) -> dict    hashes stored in run_config.json at the run's start
    check_benchmark(stored, fingerprint, rows, run_dir, answered=(), quiet=False)
                                    RunError if the asked questions changed; -> the fingerprint to store
                                    now (None: keep the stored one)
    missing_records(rows, run_dir) -> {id: problem}   answered rows whose record file is missing or incomplete

Example:
    >>> from activation_eval.eval.benchmark import DEFAULT_BENCHMARK
    >>> fingerprint = benchmark_fingerprint(DEFAULT_BENCHMARK, rows)      # the 6 rows asked of it
    >>> fingerprint["questions_asked"], len(fingerprint["benchmark_sha256"])
    (6, 64)
    >>> missing_records(run_folder.read_results("runs/r1"), "runs/r1")      # every record is there
    {}

The fingerprint: benchmark_sha256, the sha256 of the benchmark file's bytes (None if it is not a
regular file), and questions_sha256, the sha256 of the normalized rows actually asked (after
--limit: id, question, answers, choices, category), with questions_asked, their number. A resume
is accepted when the file is unchanged, or when the file changed but the rows the run asked
before are the same (an edit beyond --limit); it is refused when those rows changed. Run folders
written before the fingerprint existed are accepted with a warning, and get one stored.
"""
import hashlib
import json
import logging
import os

from .. import schema
from ..store import run_folder
from ..store.run_reader import RunReader
from .config import RunError

log = logging.getLogger(__name__)

FINGERPRINT_KEYS = ("benchmark_sha256", "questions_sha256", "questions_asked")


def benchmark_fingerprint(path, rows):
    return {"benchmark_sha256": _file_sha256(path), "questions_sha256": _rows_sha256(rows),
            "questions_asked": len(rows)}


def _file_sha256(path):
    if not os.path.isfile(path):
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _rows_sha256(rows):
    digest = hashlib.sha256()
    for row in rows:
        digest.update(json.dumps(row, sort_keys=True, ensure_ascii=False, default=str).encode("utf-8") + b"\n")
    return digest.hexdigest()


def check_benchmark(stored, fingerprint, rows, run_dir, answered=(), quiet=False):
    """Compare the benchmark of a resumed run with the stored fingerprint (see the module docstring).

    `stored`: the run's run_config.json; `rows`: the rows asked now; `answered`: the stored results
    rows (to name a question that changed); quiet: no warnings (a second check). Returns the
    fingerprint to store now, or None."""
    warn = (lambda *args: None) if quiet else log.warning
    config_file = run_folder.config_path(run_dir)
    if "questions_sha256" not in stored:
        warn("%s has no benchmark hash (written by an earlier version), so an edited benchmark "
                    "cannot be detected; continuing, and storing the hash of the benchmark as it is now",
                    config_file)
        return fingerprint
    before, now = stored.get("questions_asked", 0), fingerprint["questions_asked"]
    if fingerprint["benchmark_sha256"] is not None and fingerprint["benchmark_sha256"] == stored.get("benchmark_sha256"):
        return fingerprint if now > before else None
    bench = stored.get("benchmark", "the benchmark")
    if now < before:
        raise RunError(f"--resume: the benchmark file {bench} changed since this run started in {run_dir}, and "
                       f"this run asks fewer questions ({now}) than it did ({before}), so the questions answered "
                       f"before cannot be checked: restore the file, pass --limit {before} or more, or choose "
                       f"another --output_dir")
    if _rows_sha256(rows[:before]) != stored["questions_sha256"]:
        raise RunError(f"--resume: the questions in {bench} changed since this run started in {run_dir}"
                       f"{_first_change(rows, answered)}; the rows answered before would be stale. Restore "
                       f"the benchmark file, or choose another --output_dir")
    warn("the benchmark file %s changed since this run started, but the %d question(s) this run asked "
                "are unchanged; continuing", bench, before)
    return fingerprint


def _first_change(rows, answered):
    """'(e.g. question 'q7': its question text changed)' from the stored results rows, or ''."""
    current = {row["id"]: row for row in rows}
    for old in answered:
        new = current.get(old.get("id"))
        if new is None:
            return f" (e.g. question {old.get('id')!r} is no longer among the questions asked)"
        for field in ("question", "answer", "category"):
            if field in old and old[field] != new.get(field):
                return f" (e.g. question {old['id']!r}: its {field} changed)"
    return " (the rows asked before differ: choices, order or ids)"


def missing_records(rows, run_dir):
    """{row key: problem} (schema.row_key: the id, or (id, sample)) of the answered rows whose
    record is missing, incomplete, or named outside the run's activations folder (a cheap check
    per file, run_folder.record_file_problem; the location is store.run_reader's); rows without
    a record (error rows) are not checked."""
    reader, problems = RunReader(run_dir, require_results=False), {}
    for row in rows:
        if row.get(schema.ERROR):
            continue
        try:
            location = reader.locate(row)
            problem = "no activation_file" if location is None else run_folder.record_file_problem(location.path)
        except FileNotFoundError:
            problem = "missing"
        except (OSError, ValueError) as exc:
            problem = " ".join(str(exc).split())
        if problem:
            problems[schema.row_key(row)] = problem
    return problems
