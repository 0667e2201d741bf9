"""The one writer of a run folder, the mirror of RunReader: every producer hands it rows and records.

main.py's runner, the lm-eval backend and the Inspect provider do nothing else with files: the
writer claims the folder (a lock held to the end), refuses what it must before any model work,
writes records and rows durably in the units the producer flushes, merges several processes'
parts, and writes summary.json. No other module opens results.jsonl, a part or a shard for writing.

Public names:
    RunWriter(run_dir, producer, *, resume=False, capture=True, store="files", record_format="pkl",
              shard_bytes=SHARD_BYTES, save_dir=None, rank=0, world=1)
        .claim() -> self           (process 0) the lock, then the refusals (module docstring)
        .stored_config             the run_config.json of the folder it continues (None: a new run)
        .open(settings, order=(), compare=()) -> rows   (process 0) run_config.json written, leftovers
                                   of an interrupted writer cleaned, parts merged; the rows already written
        .add(row, record=None)     the record (if it holds activations) stamped with the row's grading
                                   and written (files) or buffered (shards); the row waits for flush()
        .full() -> bool            the shard buffer should be written (SHARD_MAX_SECONDS or shard_bytes)
        .flush() -> rows           buffered records (one shard), then the rows, fsynced
        .staging(tag) -> Staging   scratch tensors of requests in flight (store/staging.py)
        .finish(order=()) -> rows  (process 0) the parts merged into results.jsonl in `order`, shards no
                                   row names removed, scratch removed; the final rows
        .update_config(**settings) (process 0) settings known only later (lm-eval's tasks) into run_config.json
        .write_summary(summary)    summary.json (schema/summary.py's build_summary made it)
        .release()                 the locks; also a context manager's exit
    SHARD_BYTES, SHARD_MAX_SECONDS, WORDS
Its file work (appending, repairing and merging results.jsonl and its parts, shard names, removing
orphan shards) is store/run_files.py's, which only the writer calls.

Example:
    >>> from activation_eval.schema.summary import build_summary
    >>> rows = [{"id": "q1", "category": "geo", "correct": True}, {"id": "q2", "category": "geo", "correct": False}]
    >>> with RunWriter("runs/w1", "main", capture=False).claim() as writer:
    ...     stored = writer.open({"model": "tiny"})       # the rows already written: none
    ...     for row in rows:
    ...         _ = writer.add(row)                      # and its record, when it has one
    ...     written = writer.flush()
    ...     final = writer.finish(order=["q1", "q2"])
    ...     summary = writer.write_summary(build_summary(final, producer="main", model="tiny", benchmark="b",
    ...                                                  output_dir="runs/w1"))
    >>> stored, [row["id"] for row in final], summary["accuracy"]
    ([], ['q1', 'q2'], 0.5)
    >>> RunWriter("runs/w1", "lm-eval", resume=True).claim()
    Traceback (most recent call last):
    activation_eval.store.errors.RunFolderError: output folder runs/w1 holds a run written by main.py; the lm-eval ...

The refusals, in order, each one line naming the folder and what to do, in the producer's words
(WORDS): `run_dir` is a file (or inside one); another live writer holds the lock ("in use by
main.py (pid 123)"); the folder holds anything without `resume` ("pass --resume to continue that
run"); with `resume`, its run_config.json names another producer. An external --activation_save_dir
(main.py) is checked and locked too (store/save_dir.py).

Durability: a file-store record is written (atomically, fsynced) when it is added, before its row;
shard-store records wait in memory until flush() writes them as one shard, then their rows. A row
is appended (fsynced) at flush(): a producer may complete a row it added (e.g. P(True)) until then.
A crash loses what was not flushed; rows that name a missing record are answered again on resume
(run/resume.py), shards no row names are removed at finish().
"""
import logging
import os
import shutil
import stat
import time

from .. import schema
from ..schema.record import stamp
from ..schema.run_config import PRODUCER_LABELS, producer_of, run_info
from . import run_folder
from .atomic import file_in_the_way, remove_stale_temp_files, write_json_atomic
from .errors import RunFolderError
from .lock import RunLock
from .records import save_activations
from .run_files import append_results, merge_results, remove_unreferenced_shards, repair_results, shard_name
from .save_dir import check_save_dir, is_external, lock_save_dir, open_save_dir, record_dir
from .shard_writer import write_shard
from .staging import STAGING_DIR, Staging

log = logging.getLogger(__name__)

SHARD_BYTES = 256 * 2**20       # default shard size (main.py: --shard_size_mb)
SHARD_MAX_SECONDS = 600         # the longest a finished record waits in the shard buffer
# how each producer's user names the folder and the resume switch, for the messages
WORDS = {"main": ("--output_dir", "--resume"),
         "lm-eval": ("output_dir (model_args)", "resume=true (model_args)"),
         "inspect": ("-M output_dir", "-M resume=true")}
STORES, RECORD_FORMATS = ("files", "shards"), ("pkl", "safetensors")


class RunWriter:
    def __init__(self, run_dir, producer, *, resume=False, capture=True, store="files", record_format="pkl",
                 shard_bytes=SHARD_BYTES, save_dir=None, rank=0, world=1):
        if producer not in WORDS:
            raise ValueError(f"unknown producer {producer!r}; one of {', '.join(WORDS)}")
        if store not in STORES or record_format not in RECORD_FORMATS:
            raise ValueError(f"store must be one of {STORES} and record_format one of {RECORD_FORMATS}")
        self.run_dir, self.producer, self.resume, self.capture = os.fspath(run_dir), producer, bool(resume), capture
        self.store, self.record_format, self.shard_bytes = store, record_format, int(shard_bytes)
        self.save_dir = os.fspath(save_dir) if save_dir else record_dir(self.run_dir)
        self.rank, self.world = rank, world
        self.label = PRODUCER_LABELS[producer]
        self.stored_config = None
        self._locks, self._rows, self._buffer, self._buffered_bytes, self._since = [], [], [], 0, None
        self._staging = []

    # ------------------------------------------------------------------------- claim and open

    def claim(self):
        """Lock the folder and check it may be written (module docstring); refuses before any model work."""
        folder_flag, resume_flag = WORDS[self.producer]
        blocker = file_in_the_way(self.run_dir)
        if blocker:
            where = "is a file" if blocker == os.path.abspath(self.run_dir) else f"is inside {blocker}, which is a file"
            raise RunFolderError(f"output folder {self.run_dir} {where}, not a folder: give {folder_flag} a folder "
                                 f"path (it is made if missing)")
        try:
            self._locks.append(RunLock(self.run_dir, holder=self.label,
                                       hint=f"choose another {folder_flag}").acquire())
            self._check_content(folder_flag, resume_flag)
            if self.capture and is_external(self.run_dir, self.save_dir):
                check_save_dir(self.run_dir, self.save_dir, self.resume)
                self._locks += filter(None, [lock_save_dir(self.run_dir, self.save_dir, self.label)])
        except BaseException:
            self.release()
            raise
        return self

    def _check_content(self, folder_flag, resume_flag):
        config_path = run_folder.config_path(self.run_dir)
        stored = None
        if os.path.lexists(config_path):
            try:
                stored = run_folder.read_run_config(self.run_dir)
            except (OSError, ValueError) as exc:
                raise RunFolderError(f"{exc}; it holds the run's settings: restore it, or choose another "
                                     f"{folder_flag}") from None
        owner = PRODUCER_LABELS.get(producer_of(stored), producer_of(stored)) if stored is not None else None
        if not self.resume:
            if _has_content(self.run_dir):
                held = f" (it holds a run written by {owner})" if owner else ""
                raise RunFolderError(f"output folder {self.run_dir} already exists and is not empty{held}; pass "
                                     f"{resume_flag} to continue that run, or choose another {folder_flag}")
        elif stored is not None and producer_of(stored) != self.producer:
            raise RunFolderError(f"output folder {self.run_dir} holds a run written by {owner}; {self.label} "
                                 f"continues only its own runs: choose another {folder_flag}")
        self.stored_config = stored

    def open(self, settings, order=(), compare=()):
        """Write run_config.json (the producer's `settings` after schema.run_config's keys), clean what an
        interrupted writer left (temp files, scratch, parts: merged in `order`), make the activations
        folder; returns the rows already written (torn lines repaired away). `compare`: settings that
        must equal the stored run's when continuing it (RunFolderError naming them otherwise)."""
        out = self.run_dir
        stored = self.stored_config or {}
        diffs = [f"{k}: stored {stored.get(k)!r}, now {settings.get(k)!r}" for k in compare
                 if self.stored_config is not None and stored.get(k) != settings.get(k)]
        if diffs:
            raise RunFolderError(f"{WORDS[self.producer][1]}: the settings differ from the stored run in {out}: "
                                 + "; ".join(diffs) + f". Use the stored settings, or choose another "
                                 f"{WORDS[self.producer][0]}")
        os.makedirs(out, exist_ok=True)
        write_json_atomic(run_folder.config_path(out), {**stored, **run_info(self.producer, settings)})
        removed = remove_stale_temp_files(out)
        if self.capture:
            acts = open_save_dir(out, self.save_dir, self.resume)
            removed += remove_stale_temp_files(acts) + remove_stale_temp_files(os.path.join(acts, run_folder.UNITS_DIR))
        if removed:
            log.info("removed %d unfinished temp file(s) from an interrupted run", removed)
        _remove_scratch(out)
        if run_folder.shard_files(out):
            return merge_results(out, order)
        return repair_results(run_folder.results_path(out))

    # ------------------------------------------------------------------------- rows and records

    def add(self, row, record=None):
        """Take a row and its record (module docstring); returns the row (its record's place filled in
        for the file store; the shard store fills it at flush)."""
        if record is not None and "activations" in record:
            stamp(record, row)
            if self.store == "files":
                path = run_folder.record_path(record_dir(self.run_dir), row[schema.ID], self.record_format,
                                              sample=row.get(schema.SAMPLE))
                save_activations(record, path)
                row[schema.ACTIVATION_FILE] = os.path.relpath(path, self.run_dir)
            else:
                self._buffer.append((row, record))
                self._buffered_bytes += sum(t.numel() * t.element_size() for t in record["activations"].values())
                self._since = self._since or time.monotonic()
        self._rows.append(row)
        return row

    def full(self):
        """Should flush() be called now (the shard buffer holds shard_bytes, or waited SHARD_MAX_SECONDS)?"""
        return bool(self._buffer) and (self._buffered_bytes >= self.shard_bytes
                                       or time.monotonic() - self._since >= SHARD_MAX_SECONDS)

    def pending(self):
        """Rows added and not yet flushed."""
        return len(self._rows)

    def flush(self):
        """Write the buffered records as one shard (complete, fsynced), then every waiting row (fsynced);
        returns those rows."""
        if self._buffer:
            rows = [row for row, _ in self._buffer]
            path = run_folder.unit_shard_path(record_dir(self.run_dir), shard_name(rows))
            os.makedirs(os.path.dirname(path), exist_ok=True)
            write_shard(path, [run_folder.shard_row_id(row) for row in rows], [record for _, record in self._buffer])
            for index, row in enumerate(rows):
                row[schema.ACTIVATION_SHARD] = os.path.relpath(path, self.run_dir)
                row[schema.ACTIVATION_ROW] = index
        rows, self._rows = self._rows, []
        self._buffer, self._buffered_bytes, self._since = [], 0, None
        if rows:
            path = (run_folder.results_path(self.run_dir) if self.world == 1
                    else os.path.join(_part_folder(self.run_dir), f"results.rank{self.rank}.jsonl"))
            append_results(path, rows)
        return rows

    def staging(self, tag):
        """A Staging area under the run folder for tensors of requests still in flight (removed at finish)."""
        area = Staging(os.path.join(self.run_dir, STAGING_DIR, str(tag)))
        self._staging.append(area)
        return area

    # ------------------------------------------------------------------------- finish

    def finish(self, order=()):
        """(process 0, after every process flushed) Merge the parts into results.jsonl, rows of the ids
        in `order` first; remove shards no row names and the scratch; returns the final rows."""
        if self._rows or self._buffer:
            self.flush()
        final = merge_results(self.run_dir, order)
        if self.capture and self.store == "shards":
            remove_unreferenced_shards(self.run_dir, record_dir(self.run_dir), final)
        for area in self._staging:
            area.remove()
        _remove_scratch(self.run_dir)
        return final

    def update_config(self, **settings):
        """(process 0) Add settings known only later (lm-eval: the tasks) to run_config.json."""
        stored = run_folder.read_run_config(self.run_dir)
        write_json_atomic(run_folder.config_path(self.run_dir), {**stored, **settings})

    def write_summary(self, summary):
        write_json_atomic(run_folder.summary_path(self.run_dir), summary)
        return summary

    def release(self):
        for lock in reversed(self._locks):
            lock.release()
        self._locks = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()


# ----------------------------------------------------------------------------- helpers

def _has_content(run_dir):
    """Does the folder hold anything but a plain lock file (a run's own, or one a killed run left)?"""
    try:
        names = set(os.listdir(run_dir))
    except FileNotFoundError:
        return False
    lock = run_folder.lock_path(run_dir)
    try:
        plain_lock = stat.S_ISREG(os.lstat(lock).st_mode)
    except OSError:
        plain_lock = False
    return bool(names - ({run_folder.LOCK_FILE} if plain_lock else set()))


def _part_folder(run_dir):
    folder = run_folder.own_folder(run_dir, run_folder.SHARDS_DIR)
    os.makedirs(folder, exist_ok=True)
    return folder


def _remove_scratch(run_dir):
    """The staging folder of requests in flight (ours: a real folder inside the run, never a link)."""
    scratch = os.path.join(run_dir, STAGING_DIR)
    if os.path.isdir(scratch) and not os.path.islink(scratch):
        shutil.rmtree(scratch, ignore_errors=True)
