"""Opening files we did not write ourselves: regular files only, never blocking, size-capped reads.

Public names:
    open_regular(path, what=None)      (unbuffered binary file, size) of a regular file (or a symlink
                                       to one); CorruptFileError naming it for a FIFO, device, socket
                                       or folder. Opens without blocking (a FIFO with no writer would
                                       hang an ordinary open)
    read_regular_bytes(path, max_bytes, what="file") -> bytes   the whole of a regular file of at
                                       most max_bytes; CorruptFileError naming the path and the limit
                                       otherwise (FileNotFoundError / OSError when it cannot be opened)

Example:
    >>> f, size = open_regular("results/run1/activations/geo-001.safetensors")
    >>> size == os.path.getsize("results/run1/activations/geo-001.safetensors"), len(f.read(8))
    (True, 8)
    >>> f.close()
    >>> data = read_regular_bytes("results/run1/run_config.json", 16 * 2**20, what="run settings file")
    >>> data[:1]
    b'{'
    >>> os.mkfifo("results/run1/summary.json.fifo")            # a FIFO with no writer: no hang
    >>> open_regular("results/run1/summary.json.fifo", what="run summary")
    Traceback (most recent call last):
    activation_eval.store.errors.CorruptFileError: ...: results/run1/summary.json.fifo

Every file of a run folder and every record is read through here (records, shards, results.jsonl,
run_config.json, summary.json), so that a FIFO, /dev/zero or a folder put in a file's place gives a
one-line error instead of a hang or an exhausted memory. The size is the one fstat gave for the
open file: a file growing while read is read up to that size, never further.
"""
import os
import stat

from .errors import CorruptFileError, corrupt


def _kind(mode):
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


def _error(path, what, reason):
    """A record's message is records' own (errors.corrupt); any other file's names what it is."""
    if what is None:
        return corrupt(path, reason)
    return CorruptFileError(f"cannot read {what} ({reason}): {path}")


def open_regular(path, what=None):
    """(binary file opened unbuffered, its size) if `path` is a regular file (or a symlink to one);
    CorruptFileError naming it for a FIFO, device, socket or folder (`what`: what the file is, for
    the message; default: an activation record). Never blocks."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _error(path, what, f"{_kind(st.st_mode)}: only regular files are read")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb", buffering=0), st.st_size
    except BaseException:
        os.close(fd)
        raise


def read_regular_bytes(path, max_bytes, what="file"):
    """The bytes of the regular file at `path`, at most `max_bytes` of them (None: no cap).

    >>> read_regular_bytes("runs/r1/summary.json", 16 * 2**20, what="run summary")[:14]
    b'{\\n  "format_ve'
    >>> read_regular_bytes("runs/r1/summary.json", 100, what="run summary")
    Traceback (most recent call last):
    activation_eval.store.errors.CorruptFileError: ...100...: runs/r1/summary.json

    CorruptFileError (a ValueError) naming the path: not a regular file, or larger than max_bytes
    (the message gives the limit). FileNotFoundError / OSError if it cannot be opened."""
    path = os.fspath(path)
    f, size = open_regular(path, what)
    with f:
        if max_bytes is not None and size > max_bytes:
            raise _error(path, what, f"{size} bytes, more than the {max_bytes}-byte limit for it")
        return read_exactly(f, size)


def read_exactly(f, size):
    """Up to `size` bytes of the open binary file `f` (fewer only if it ends first)."""
    chunks, left = [], size
    while left > 0:
        chunk = f.read(left)
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)
