"""One run at a time in a run folder: an exclusive lock held for the whole run.

Public names:
    RunLock(run_dir, name=LOCK_FILE, what="output folder", hint="choose another --output_dir", holder="another run")
                          acquire() -> self (RunFolderError naming the holder if another one holds it),
                          release(); a context manager. name/what/hint: another folder's lock (an
                          --activation_save_dir's); holder: who takes it, for the message others get

Example:
    >>> with RunLock("results/r1", holder="main.py"):     # a second writer into results/r1 is refused
    ...     RunLock("results/r1").acquire()
    Traceback (most recent call last):
    activation_eval.store.errors.RunFolderError: output folder results/r1 is in use by main.py (pid ...): ...
    >>> RunLock("results/r1").acquire().release()      # the holder is gone: free again

The lock is fcntl.flock on run_folder.LOCK_FILE inside the run folder (the folder is created if
needed; the lock file holds the holder's pid and name, for the message). The kernel drops the lock
when its process dies, also by SIGKILL, so a crashed run never leaves the folder locked: a leftover
lock file is simply locked again. flock locks belong to an open file, so a second writer in the
same process is refused too. Only the main process of a multi-process run takes it (run_writer.py).
POSIX only (fcntl); on NFS, Linux emulates flock with a byte-range lock that every client sees.
The lock file is opened without following a symlink and must be a regular file: a `.run.lock` that
is a symlink (or a FIFO, a device, a folder) is refused with a RunFolderError, and nothing is written
through it (following it would truncate whatever file it names).
"""
import errno
import fcntl
import os
import stat

from . import run_folder
from .errors import RunFolderError

_FLAGS = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0) | os.O_NONBLOCK


class RunLock:
    def __init__(self, run_dir, name=run_folder.LOCK_FILE, what="output folder", hint="choose another --output_dir",
                 holder="another run"):
        self.run_dir = os.fspath(run_dir)
        self.path = os.path.join(self.run_dir, name)
        self.what, self.hint, self.holder = what, hint, " ".join(str(holder).split())[:80] or "another run"
        self._fd = None
        self._created_dir = False

    def acquire(self):
        """Take the lock (non-blocking); RunFolderError naming the folder and the holder if held."""
        if self._fd is not None:
            return self
        self._created_dir = not os.path.isdir(self.run_dir)
        os.makedirs(self.run_dir, exist_ok=True)
        while True:
            fd = self._open()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                pid, holder = _read_holder(fd)
                os.close(fd)
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise
                raise RunFolderError(f"{self.what} {self.run_dir} is in use by {holder} (pid {pid}): wait for "
                               f"it to finish, or {self.hint}") from None
            if _same_file(fd, self.path):
                break
            os.close(fd)        # the holder removed the file as we opened it: lock the new one
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n{self.holder}\n".encode("utf-8", "replace"))
        self._fd = fd
        return self

    def _open(self):
        """The lock file's descriptor: never through a symlink, only a regular file (never blocks)."""
        refused = (f"{self.path} is not a regular file ({{}}): the lock of a run is a file of its own and "
                   f"nothing was written through it; remove it (rm {self.path!r}) if no run is using "
                   f"{self.run_dir}, or {self.hint}")
        try:
            fd = os.open(self.path, _FLAGS, 0o644)
        except OSError as exc:
            if exc.errno == errno.ELOOP or os.path.islink(self.path):
                raise RunFolderError(refused.format("a symbolic link")) from None
            if exc.errno in (errno.EISDIR, errno.ENXIO):
                raise RunFolderError(refused.format("a folder" if exc.errno == errno.EISDIR else "a socket")) from None
            raise
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            os.close(fd)
            raise RunFolderError(refused.format("a FIFO" if stat.S_ISFIFO(mode) else "a device or other special file"))
        os.set_blocking(fd, True)
        return fd

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


def _read_holder(fd):
    """(pid, name) the holder wrote into the lock file ("unknown" and "another run" when unreadable)."""
    try:
        lines = os.pread(fd, 256, 0).decode("utf-8", "replace").splitlines()
    except OSError:
        lines = []
    pid = lines[0].strip() if lines and lines[0].strip().isdigit() else "unknown"
    name = " ".join(lines[1].split())[:80] if len(lines) > 1 and lines[1].strip() else "another run"
    return pid, name


def _same_file(fd, path):
    try:
        here, there = os.fstat(fd), os.lstat(path)     # a symlink put in its place is not the file
    except FileNotFoundError:
        return False
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)
