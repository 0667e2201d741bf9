"""One run at a time in a run folder: an exclusive lock held for the whole run.

Public names:
    RunLock(run_dir)      acquire() -> self (RunError if another run holds it), release(); a context manager

Example:
    >>> with RunLock("results/r1"):          # a second run into results/r1 now gets a RunError
    ...     run_the_benchmark()

The lock is fcntl.flock on run_folder.LOCK_FILE inside the run folder (the folder is created if
needed; the lock file holds the holder's pid, for the message). The kernel drops the lock when its
process dies, also by SIGKILL, so a crashed run never leaves the folder locked: a leftover lock
file is simply locked again. Only the main process of a multi-process run takes it (runner.py).
POSIX only (fcntl); on NFS, Linux emulates flock with a byte-range lock that every client sees.
"""
import errno
import fcntl
import os

from ..store import run_folder
from .config import RunError


class RunLock:
    def __init__(self, run_dir):
        self.run_dir = os.fspath(run_dir)
        self.path = run_folder.lock_path(self.run_dir)
        self._fd = None
        self._created_dir = False

    def acquire(self):
        """Take the lock (non-blocking); RunError naming the folder and the holder's pid if held."""
        if self._fd is not None:
            return self
        self._created_dir = not os.path.isdir(self.run_dir)
        os.makedirs(self.run_dir, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                holder = _read_pid(fd)
                os.close(fd)
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise
                raise RunError(f"output folder {self.run_dir} is in use by another run (pid {holder}): wait for "
                               f"it to finish, or choose another --output_dir") from None
            if _same_file(fd, self.path):
                break
            os.close(fd)        # the holder removed the file as we opened it: lock the new one
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def release(self):
        """Remove the lock file (while still holding it, so no one locks a removed file), unlock;
        a folder this lock created and nothing else filled is removed too. Idempotent."""
        if self._fd is None:
            return
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        os.close(self._fd)
        self._fd = None
        if self._created_dir:
            try:
                os.rmdir(self.run_dir)      # only if empty: a run that failed before writing anything
            except OSError:
                pass

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


def _read_pid(fd):
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        text = ""
    return text if text.isdigit() else "unknown"


def _same_file(fd, path):
    try:
        here, there = os.fstat(fd), os.stat(path)
    except FileNotFoundError:
        return False
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)
