"""Atomic file writes: a file appears complete or not at all, and survives a crash once written.

Public names:
    atomic_write(path, write)          run write(tmp_path) on a temp file beside `path`, fsync it,
                                       rename it over `path`, fsync the folder
    write_pieces(path, pieces)         write byte-like pieces with as few writev calls as possible
    write_text_atomic(path, text)      atomic UTF-8 text write
    encode_text(text) -> bytes         UTF-8, a lone surrogate as its JSON escape
    write_json_atomic(path, obj)       atomic indented JSON write (datetimes as ISO-8601)
    json_default(value)                the json.dumps default= used for records and run files
    remove_stale_temp_files(directory) delete temp files left by killed writers; -> count
    fsync_path(path)                   fsync one file (or folder)
    file_in_the_way(folder)            the existing non-folder that stops `folder` being made, or None

Example:
    >>> write_json_atomic("runs/r1/summary.json", {"accuracy": 0.75})
    'runs/r1/summary.json'
    >>> import numpy as np
    >>> arr = np.arange(4, dtype=np.float32)
    >>> os.makedirs("acts")
    >>> atomic_write("acts/q1.bin", lambda tmp: write_pieces(tmp, [b"head", memoryview(arr)]))
    >>> os.path.getsize("acts/q1.bin"), os.listdir("acts")          # 4 + 16 bytes; no temp file left
    (20, ['q1.bin'])

Temp files are named ".<final name>.<8 hex>.tmp" in the target's folder (same file system, so the
rename is atomic). A failed write raises StorageError (an OSError) naming the file and saying that
the previous file there is unchanged.
"""
import datetime
import errno
import json
import os
import pickle
import re
import secrets
import stat

import numpy as np

from .errors import StorageError

_TEMP_NAME = re.compile(r"^\..+\.[0-9a-f]{8}\.tmp$")  # ".<final name>.<8 hex>.tmp"


_IOV_MAX = 1024             # buffers per writev call (IOV_MAX on Linux and macOS)



def json_default(value):
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")



def encode_text(text):
    """`text` as UTF-8, a lone surrogate as its backslash escape (JSON's own escape of it)."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace")


def write_text_atomic(path, text):
    """Write `text` (UTF-8) to `path` so that readers see the old or the new file, never half.

    >>> from activation_eval.store.run_folder import read_results
    >>> rows = read_results("runs/r1")
    >>> write_text_atomic("runs/r1/results.jsonl", "".join(json.dumps(r) + "\\n" for r in rows))
    'runs/r1/results.jsonl'

    Same temp-file + fsync + rename as save_activations; raises StorageError on I/O failure.
    A lone surrogate (valid in a JSON string: "\\ud800", kept raw by json.dumps(ensure_ascii=False))
    is written as its escape \\ud800, which in JSON text reads back as the same string.
    """
    path = os.fspath(path)
    data = encode_text(text)

    def write(tmp_path):
        with open(tmp_path, "wb") as f:
            f.write(data)
    atomic_write(path, write)
    return path


def write_json_atomic(path, obj):
    """Write `obj` as indented JSON to `path` atomically (see write_text_atomic).

    >>> write_json_atomic("runs/r1/summary.json", {"accuracy": 0.75})
    'runs/r1/summary.json'
    """
    return write_text_atomic(path, json.dumps(obj, indent=2, ensure_ascii=False,
                                              default=json_default) + "\n")



def atomic_write(path, write):
    """Run write(tmp_path) on a temp file next to `path`, fsync it, rename it to `path`."""
    folder = os.path.dirname(os.path.abspath(path))
    tmp_path = os.path.join(folder, f".{os.path.basename(path)}.{secrets.token_hex(4)}.tmp")
    created = False
    try:
        os.makedirs(folder, exist_ok=True)
        os.close(os.open(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))  # umask applies
        created = True
        write(tmp_path)
        fsync_path(tmp_path)
        os.replace(tmp_path, path)
    except BaseException as e:
        if created:
            try:
                os.unlink(tmp_path)
            except OSError:
                pass
        if isinstance(e, OSError):
            raise _storage_error(e, f"could not write {os.path.basename(path)}", path,
                                 "any previous file there is unchanged") from e
        raise
    try:
        _fsync_directory(folder)        # makes the rename itself survive a power loss
    except OSError as e:
        raise _storage_error(e, f"wrote {os.path.basename(path)} but could not fsync its folder", path,
                             "it may not survive a crash") from e



def _storage_error(cause, what, path, consequence):
    err = StorageError(f"{what} ({type(cause).__name__}: {cause}); {consequence}: {path}")
    err.errno = getattr(cause, "errno", None) or errno.EIO
    return err


def fsync_path(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_directory(folder):
    if os.name == "posix":          # directories cannot be opened for fsync on Windows
        fsync_path(folder)



def write_pieces(path, pieces):
    """Write the byte-like `pieces` (a list, or an iterable that makes them one by one) to `path`
    with as few writev calls as the OS allows: each write call costs ~20 us here (one per tensor:
    +0.6 ms, 20%, on a 5 MB record). Pieces are written once they add up to _BATCH_BYTES, so a
    generator's pieces can be freed as it goes (a shard's layers are joined one at a time)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_BINARY", 0),
                 0o666)
    try:
        views, held = [], 0
        for piece in pieces:
            view = piece.raw() if isinstance(piece, pickle.PickleBuffer) else memoryview(piece).cast("B")
            if len(view):                                  # raw(): also Fortran-ordered buffers
                views.append(view)
                held += len(view)
            if held >= _BATCH_BYTES or len(views) >= _IOV_MAX:
                _write_all(fd, views)
                views, held = [], 0
        _write_all(fd, views)
    finally:
        os.close(fd)


_BATCH_BYTES = 64 * 2**20


def _write_all(fd, views):
    while views:
        if hasattr(os, "writev"):
            n = os.writev(fd, views[:_IOV_MAX])
        else:
            n = os.write(fd, views[0])
        while views and n >= len(views[0]):         # drop what was written
            n -= len(views.pop(0))
        if n:
            views[0] = views[0][n:]


def _is_plain_file(path):
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def file_in_the_way(folder):
    """The path (`folder` itself or an ancestor) that exists but is not a folder, so that `folder`
    cannot be made or written into; None when it can (a missing folder is fine).

    >>> file_in_the_way("results/run1") is None          # results/ is absent here (or a folder)
    True
    >>> _ = open("notes", "w").write("a file")
    >>> file_in_the_way("notes/run1") == os.path.abspath("notes")
    True
    """
    path = os.path.abspath(folder)
    while True:
        if os.path.lexists(path):
            return None if os.path.isdir(path) else path
        parent = os.path.dirname(path)
        if parent == path:
            return None
        path = parent


def remove_stale_temp_files(directory):
    """Delete temp files (".<name>.<8 hex>.tmp") that killed writers left in `directory`.

    >>> for name in (".geo-001.pkl.0a1b2c3d.tmp", ".geo-002.pkl.4e5f6a7b.tmp"):    # left by killed writers
    ...     _ = open(os.path.join("runs/r1/activations", name), "wb").write(b"partial")
    >>> remove_stale_temp_files("runs/r1/activations")
    2

    Call it when no writer is using the folder (e.g. at the start of a run, holding its lock), and
    only on a folder the caller owns (the runner: the run folder and its own activations folder).
    Only names atomic_write makes, and only regular files: a link with such a name is left alone
    (never followed). A missing folder holds nothing: returns 0.
    """
    directory = os.fspath(directory)
    if not os.path.isdir(directory):
        return 0
    removed = 0
    for name in os.listdir(directory):
        full = os.path.join(directory, name)
        if _TEMP_NAME.match(name) and _is_plain_file(full):
            try:
                os.unlink(full)
                removed += 1
            except FileNotFoundError:
                pass                                # another cleaner got it first
    return removed

