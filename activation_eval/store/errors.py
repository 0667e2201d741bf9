"""The errors of activation record files and the one way their messages are worded.

Public names:
    StorageError(OSError)           a write failed (the previous file is left unchanged)
    CorruptFileError(ValueError)    a file is empty, truncated, garbled or not a record
    UnsafeFileError(ValueError)     a pickle references what a record never contains
    RunFolderError(ValueError)      a run folder cannot be written: in use, another producer's, not a folder
    corrupt(path, reason)           -> CorruptFileError "corrupt or unreadable ... (reason): path";
                                    reason: a text or the parser's exception
    format_hint(head)               "; it looks like ..." for a file named as the wrong format

They live here so that records.py, safe_pickle.py and the run folder's modules can all raise them
without importing each other.
Every load error is one of the two ValueErrors, its message ending with the file's path, so that
the CLIs print it as one line and exit 2.

Example:
    >>> raise corrupt("acts/q1.pkl", "empty file")
    Traceback (most recent call last):
    activation_eval.store.errors.CorruptFileError: corrupt or unreadable activation record (empty file): acts/q1.pkl
    >>> format_hint(b"PK\\x03\\x04...")
    '; it looks like a torch.save zip archive: use torch.load(path, weights_only=True)'
"""


class StorageError(OSError):
    """Writing a record file failed (disk full, permission denied, ...); any previous file at
    that path is unchanged and no temp file is left behind. `errno` is the cause's errno."""


class CorruptFileError(ValueError):
    """A record file is empty, truncated, garbled, or not an activation record.
    The message ends with the file's path."""


class UnsafeFileError(ValueError):
    """A pickle references a global that activation records never contain (it could run code).
    The message names the global and ends with the file's path."""


class RunFolderError(ValueError):
    """A run folder cannot be claimed or written: another live writer holds it, it holds another
    producer's run, it is not a folder, a file in it is not what the run writes. The message says
    what to do, in the words of the producer that asked (--output_dir, model_args, -M)."""


def corrupt(path, reason):
    """The CorruptFileError for `path` (to raise): the message ends with the path.

    `reason` is a short text, or the exception a parser raised on the file's bytes (shown as
    "TypeName: message", the message cut at 300 characters).
    """
    if isinstance(reason, BaseException):
        reason = f"{type(reason).__name__}: {str(reason)[:300]}"
    return CorruptFileError(f"corrupt or unreadable activation record ({reason}): {path}")


def format_hint(head):
    """A hint naming the format the first bytes `head` look like ("" when none fits)."""
    if head[:4] == b"PK\x03\x04":
        return "; it looks like a torch.save zip archive: use torch.load(path, weights_only=True)"
    if head[:1] == b"\x80":
        return "; it looks like a pickle: name it .pkl"
    if len(head) >= 9 and head[8:9] == b"{":
        return "; it looks like safetensors: name it .safetensors"
    return ""
