"""The run's activations folder, and an --activation_save_dir that lies elsewhere: one run owns it.

Public names:
    record_dir(run_dir)         <run_dir>/activations: where records are written and rows point, always
    is_external(run_dir, save_dir)   does the save dir resolve to a place outside the run folder?
    check_save_dir(run_dir, save_dir, resume=False)   RunFolderError if the save dir cannot be this
                                run's (writes nothing)
    lock_save_dir(run_dir, save_dir, holder)   a held RunLock on an external save dir (None otherwise)
    open_save_dir(run_dir, save_dir, resume=False)   create the save dir, <run_dir>/activations (a link
                                to it when it lies elsewhere) and the owner file of an external save dir
    owns(run_dir, activations_dir)   is that activations folder this run's own (to delete in it)?
    OWNER_FILE, SAVE_LOCK_FILE  the two files this module keeps in an external save dir

Example:
    >>> import contextlib
    >>> check_save_dir("runs/r2", "scratch/r2")    # at the checks, before anything is written
    >>> os.makedirs("runs/r2")                    # the run writer makes the run folder first
    >>> with lock_save_dir("runs/r2", "scratch/r2", "main.py") or contextlib.nullcontext():
    ...     open_save_dir("runs/r2", "scratch/r2")     # runs/r2/activations -> scratch/r2
    ...     record_dir("runs/r2")                      # where records are written and rows point
    'runs/r2/activations'
    'runs/r2/activations'
    >>> os.path.islink("runs/r2/activations"), os.path.realpath("runs/r2/activations") == os.path.realpath("scratch/r2")
    (True, True)
    >>> check_save_dir("runs/r3", "scratch/r2")
    Traceback (most recent call last):
    activation_eval.store.errors.RunFolderError: ...

The contract: rows name their records as `activations/...` inside the run folder, whatever
--activation_save_dir says. By default the save dir IS <output_dir>/activations. When it lies
elsewhere (e.g. big scratch storage), <output_dir>/activations is made a symbolic link to it, and
the save dir belongs to that one run: OWNER_FILE in it holds the run folder's resolved path, written
at first use; another run folder pointed at the same save dir is refused (records are named by
question id only: two runs there would overwrite each other's records and load each other's
activations), and the save dir is locked for the run's duration (run/lock.py, its own lock file
SAVE_LOCK_FILE). A run resuming itself is allowed. The same holds for an <output_dir>/activations
that is itself a link to a folder outside the run. A fresh run refuses an external save dir that
already holds files but no owner file (another tool's or an earlier version's records).
"""
import errno
import os

from . import run_folder
from .errors import RunFolderError
from .files import read_regular_bytes
from .lock import RunLock

OWNER_FILE = ".activation_eval_owner"
SAVE_LOCK_FILE = ".activation_eval.lock"
_OWNER_MAX = 1 << 16


def record_dir(run_dir):
    """<run_dir>/activations: the folder records are written to (through the link, if any)."""
    return os.path.join(os.fspath(run_dir), run_folder.ACTIVATIONS_DIR)


def _inside(path, folder):
    """Is the resolved `path` the resolved `folder` or inside it?"""
    return os.path.commonpath([path, folder]) == folder


def _resolved(run_dir, save_dir):
    """(resolved run folder, resolved save dir)."""
    return os.path.realpath(run_dir), os.path.realpath(save_dir)


def is_external(run_dir, save_dir):
    run, save = _resolved(run_dir, save_dir)
    return not _inside(save, run)


def check_save_dir(run_dir, save_dir, resume=False):
    """RunFolderError (with what to do) unless the save dir can be this run's: not the run folder nor a
    folder holding it; <output_dir>/activations absent, the save dir, or a link to it; an external
    save dir owned by no other run (and, for a fresh run, empty if it has no owner). Writes nothing."""
    run, save = _resolved(run_dir, save_dir)
    given = save_dir
    if _inside(run, save):
        raise RunFolderError(f"--activation_save_dir {given} is the output folder or holds it: give it a folder of "
                       f"its own (default: <output_dir>/activations)")
    act = record_dir(run_dir)
    if os.path.lexists(act) and os.path.realpath(act) != save:
        raise RunFolderError(f"{act} already exists and is not --activation_save_dir {given} (nor a link to it): "
                       f"a run's records are always reached through its activations/ folder; remove it, or "
                       f"use the run's own --activation_save_dir")
    if _inside(save, run):
        return
    owner = _owner(save)
    if owner is not None and owner != run:
        marker = os.path.join(given, OWNER_FILE)
        raise RunFolderError(f"--activation_save_dir {given} belongs to run {owner} (see {marker}); choose another "
                       f"--activation_save_dir (one per run), or delete {marker} if that run is gone")
    if owner is None and not resume and _has_files(save):
        raise RunFolderError(f"--activation_save_dir {given} already holds files but no run's {OWNER_FILE}: records "
                       f"are named by question id, so this run would overwrite them; choose an empty or new "
                       f"--activation_save_dir")


def lock_save_dir(run_dir, save_dir, holder="another run"):
    """An external save dir's lock, held (RunFolderError if another run holds it); None for a save dir
    inside the run folder (the run folder's own lock covers it). Creates the save dir if needed."""
    if not is_external(run_dir, save_dir):
        return None
    return RunLock(save_dir, SAVE_LOCK_FILE, what="--activation_save_dir", hint="choose another --activation_save_dir",
                   holder=holder).acquire()


def open_save_dir(run_dir, save_dir, resume=False):
    """Create the save dir and make <output_dir>/activations reach it; an external one gets this
    run's owner file. Call after check_save_dir, holding lock_save_dir. Returns record_dir(run_dir)."""
    check_save_dir(run_dir, save_dir, resume)
    run, save = _resolved(run_dir, save_dir)
    os.makedirs(save_dir, exist_ok=True)
    act = record_dir(run_dir)
    if not os.path.lexists(act):
        external = not _inside(save, run)
        # an external folder by its absolute path; one inside the run folder relative to it (moves with it)
        target = os.path.abspath(save_dir) if external else os.path.relpath(save, run)
        os.symlink(target, act)
    if not _inside(save, run) and _owner(save) is None:
        _write_owner(save, run)
    return act


def owns(run_dir, activations_dir):
    """True if the resolved `activations_dir` lies inside the resolved run folder, or is an external
    save dir whose owner file names this run folder: only then may the run delete files in it."""
    run, acts = os.path.realpath(run_dir), os.path.realpath(activations_dir)
    if _inside(acts, run):
        return True
    try:
        return _owner(acts) == run
    except RunFolderError:
        return False


def _owner(save):
    """The resolved run folder named by the save dir's owner file, or None when there is none."""
    marker = os.path.join(save, OWNER_FILE)
    if not os.path.lexists(marker):
        return None
    if os.path.islink(marker):
        raise RunFolderError(f"{marker} is a symbolic link, not an owner file this tool writes: remove it, or "
                       f"choose another --activation_save_dir")
    try:
        text = read_regular_bytes(marker, _OWNER_MAX, what="the save dir's owner file").decode("utf-8").strip()
    except (OSError, ValueError) as exc:
        raise RunFolderError(f"{exc}; remove it, or choose another --activation_save_dir") from None
    return text or None


def _write_owner(save, run):
    marker = os.path.join(save, OWNER_FILE)
    try:
        fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0), 0o644)
    except FileExistsError:
        return                              # check_save_dir read it under the lock: only a race with a delete
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(run + "\n")
        f.flush()
        os.fsync(f.fileno())


def _has_files(save):
    try:
        names = set(os.listdir(save))
    except FileNotFoundError:
        return False
    except OSError as exc:
        if exc.errno == errno.ENOTDIR:
            raise RunFolderError(f"--activation_save_dir {save} is not a folder") from None
        raise
    return bool(names - {SAVE_LOCK_FILE})
