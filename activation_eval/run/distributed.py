"""Several processes for one run: who this process is, which batches are its own, and the few
collectives a run needs. The launchers do the rest (torchrun, accelerate launch, SLURM + torchrun).

Public names:
    init(device="auto", device_map=None, timeout_min=60) -> Processes
                                  one process (WORLD_SIZE unset or 1): no process group, nothing changes;
                                  under torchrun / accelerate launch: a gloo group via accelerate.PartialState
    Processes                     rank / world / device; barrier, on_main, main_first, agree
    share(items, rank, world)     this process's part of a list: items rank, rank+world, ...
    parse_max_memory(text)        "0=20GiB,cpu=60GiB" -> {0: "20GiB", "cpu": "60GiB"} (the one parser)
    rank_max_memory(...)          the max_memory of one model-parallel process among several on a node
    install_stop_handler()        the launcher's SIGTERM becomes DistributedError (for the CLI)
    is_main_process(), process_label()
    exit_process(code)            end a launched process without gloo's shutdown abort
    DistributedError              another process stopped, or did not arrive in time (one-line message)
    MainProcessError              the main process refused the run and printed why (others stay quiet)
    CRASH_ENV                     test hook: "RANK:N" makes process RANK die after writing N batches

Example (each process of `torchrun --nproc_per_node 2 script.py` runs this; here, run without a
launcher, it is the one process of its run):
    >>> procs = init()
    >>> procs.rank, procs.world
    (0, 1)
    >>> batches = ["b0", "b1", "b2", "b3", "b4"]
    >>> share(batches, procs.rank, procs.world)             # process 1 of 2 would get b1, b3
    ['b0', 'b1', 'b2', 'b3', 'b4']
    >>> procs.barrier("waiting for the others")
    >>> procs.on_main(lambda: {"questions": 5}, "merging")   # runs on rank 0; all get its result
    {'questions': 5}

Why gloo, also on GPUs: the processes only exchange a few small Python objects (a barrier, the ids
already answered, the summary), never tensors, so the CPU backend is enough and avoids NCCL's
device bookkeeping. Each process still runs its model on its own GPU (cuda:LOCAL_RANK).
"""
import atexit
import dataclasses
import datetime
import logging
import os
import re
import signal
import sys

DEFAULT_TIMEOUT_MIN = 60.0      # how long a process waits for the others at a collective
CRASH_ENV = "ACTIVATION_CAPTURE_CRASH_AFTER"
_SPREAD_MAPS = ("auto", "balanced", "balanced_low_0", "sequential")  # device_maps that spread layers
_MEMORY_KEYS = ("cpu", "disk", "mps")


class DistributedError(RuntimeError):
    """Another process of the run stopped (or timed out); rows written so far are kept."""


class MainProcessError(ValueError):
    """The main process raised this error and printed it; the other processes exit quietly."""


def _env_int(name, default=0):
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


def world_size():
    return max(_env_int("WORLD_SIZE", 1), 1)


def is_main_process():
    """Rank 0, or a single process (read from the launcher's environment)."""
    return _env_int("RANK", 0) == 0


def process_label():
    """'' in a single process, else 'process R of W: ' (prefix for messages of non-main processes)."""
    return f"process {_env_int('RANK', 0)} of {world_size()}: " if world_size() > 1 else ""


def share(items, rank, world):
    """This process's part of `items` (round robin, so early and late items spread evenly).

    >>> share(list("abcde"), 1, 2)
    ['b', 'd']
    """
    return list(items[rank::world])


# ----------------------------------------------------------------------------- the processes

@dataclasses.dataclass
class Processes:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1
    device: str = "auto"          # the device this process loads its model on

    @property
    def is_main(self):
        return self.rank == 0

    @property
    def label(self):
        return f"process {self.rank} of {self.world}"

    def barrier(self, what):
        if self.world > 1:
            import torch.distributed as dist
            self._collective(what, dist.barrier)

    def on_main(self, fn, what):
        """fn() on the main process only; every process gets its result, or fails with its error."""
        if self.world == 1:
            return fn()
        import torch.distributed as dist
        box, error = [None], None
        if self.is_main:
            try:
                box = [("ok", fn())]
            except (ValueError, OSError) as exc:      # input errors: every process stops with it
                error, box = exc, [("error", str(exc))]
        self._collective(what, dist.broadcast_object_list, box, 0)
        if error is not None:
            raise error
        kind, value = box[0]
        if kind == "error":
            raise MainProcessError(value)
        return value

    def main_first(self, fn, what):
        """fn() on the main process, then (if it succeeded) on the others: input checks, downloads,
        the default model's one-time conversion happen once, and a bad input gives one error."""
        if self.world == 1:
            return fn()
        kept = []
        self.on_main(lambda: kept.append(fn()), what)
        return kept[0] if self.is_main else fn()

    def agree(self, facts, messages, what):
        """Raise unless every process has the main process's `facts` ({name: value}); messages[name]
        is the error, formatted with {ranks} (the processes that differ)."""
        if self.world == 1:
            return
        import torch.distributed as dist
        everyone = [None] * self.world
        self._collective(what, dist.all_gather_object, everyone, facts)
        for name, value in everyone[0].items():
            differ = [r for r, theirs in enumerate(everyone) if theirs[name] != value]
            if differ:
                message = messages[name].format(ranks=", ".join(map(str, differ)))
                raise ValueError(message) if self.is_main else MainProcessError(message)

    def _collective(self, what, call, *args):
        try:
            return call(*args)
        except DistributedError:
            raise
        except RuntimeError as exc:     # gloo: a peer closed its connection, or the timeout passed
            raise DistributedError(
                f"{self.label}: {what} failed: another process of this run stopped, or did not arrive "
                f"within --dist_timeout ({_first_line(exc)}). Rows written so far are kept: fix what the "
                f"failed process reported, then rerun the same command with --resume") from exc


def init(device="auto", device_map=None, timeout_min=DEFAULT_TIMEOUT_MIN):
    """This process's place in the run; joins the launcher's process group when WORLD_SIZE > 1."""
    world = world_size()
    if world == 1:
        return Processes(device=device)     # no process group, no change for a single process
    import torch
    from accelerate import PartialState

    from ..models import resolve_device
    local_rank = _env_int("LOCAL_RANK", 0)
    local_world = _env_int("LOCAL_WORLD_SIZE", world)
    if resolve_device(device) == "cuda" and not device_map:
        gpus = torch.cuda.device_count()
        if local_world > gpus:
            raise ValueError(f"{local_world} processes on this node but only {gpus} GPU(s): start at most one "
                             f"process per GPU (--nproc_per_node / --num_processes {gpus})")
        device = f"cuda:{local_rank}"
        torch.cuda.set_device(local_rank)
    # the group lives as long as the process (a second run in it reuses the group and its timeout:
    # re-creating a group under torchrun's rendezvous store is not reliable) and is destroyed at exit
    # (a gloo group still alive when the interpreter ends can abort the process)
    first = not torch.distributed.is_initialized()
    state = PartialState(cpu=True, backend="gloo", timeout=datetime.timedelta(minutes=timeout_min))
    if first:
        atexit.register(_leave_group)
    return Processes(rank=state.process_index, world=state.num_processes, local_rank=state.local_process_index,
                     local_world=local_world, device=device)


def _leave_group():
    import torch.distributed as dist
    if dist.is_initialized():
        dist.destroy_process_group()


def exit_process(code):
    """End a launched process without tearing down gloo: its background threads can abort the
    interpreter at shutdown ("terminate called without an active exception", exit -6) when a peer
    has already gone. Every file is closed and fsynced by now; only the streams need flushing.
    A single process exits normally."""
    if world_size() == 1:
        sys.exit(code)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _first_line(exc):
    """The gist of a backend error: 'Connection closed by peer [10.0.0.2]:29085', not a page of text."""
    lines = str(exc).strip().splitlines()
    text = re.sub(r"^\[[^\]]*\]\s*", "", lines[0]) if lines else type(exc).__name__   # drop "[file.cc:553] "
    return text.split(". ")[0][:200]


# ----------------------------------------------------------------------------- devices

def parse_max_memory(text):
    """'0=20GiB,1=20GiB,cpu=60GiB' -> {0: '20GiB', 1: '20GiB', 'cpu': '60GiB'}; None -> None.

    Keys: GPU indices, cpu, disk, mps. Values: sizes like 20GiB, 500MB, or bytes. ValueError otherwise.
    """
    if text is None or isinstance(text, dict):
        return None if text is None else dict(text)
    from accelerate.utils import convert_file_size_to_int
    out = {}
    for item in filter(None, (part.strip() for part in str(text).split(","))):
        key, sep, value = (s.strip() for s in item.partition("="))
        if not sep or not key or not value:
            raise ValueError(f"--max_memory: {item!r} is not DEVICE=SIZE; e.g. --max_memory 0=20GiB,cpu=60GiB")
        if key.isdigit():
            key = int(key)
        elif key.lower() in _MEMORY_KEYS:
            key = key.lower()
        else:
            raise ValueError(f"--max_memory: unknown device {key!r}; use GPU indices (0, 1, ...) or "
                             f"{', '.join(_MEMORY_KEYS)}")
        size = int(value) if value.isdigit() else value
        try:
            convert_file_size_to_int(size)
        except ValueError:
            raise ValueError(f"--max_memory: {value!r} is not a size; use e.g. 20GiB, 500MB or bytes") from None
        out[key] = size
    if not out:
        raise ValueError("--max_memory is empty; give e.g. 0=20GiB,cpu=60GiB")
    return out


def rank_max_memory(max_memory, local_rank, local_world, gpu_count, free_bytes=None):
    """max_memory for one of `local_world` processes on a node that each spread a model over their
    own block of gpu_count // local_world GPUs (process 1 of 2 on 4 GPUs: GPUs 2 and 3).

    GPU keys of `max_memory` count within the block (0 = the block's first GPU), so one flag fits
    every process. Without `max_memory`: every GPU of the block with its free memory, plus the CPU.
    >>> rank_max_memory({0: "20GiB", "cpu": "60GiB"}, local_rank=1, local_world=2, gpu_count=4)
    {2: '20GiB', 'cpu': '60GiB'}
    """
    if local_world <= 1 or gpu_count == 0:
        return max_memory
    per = gpu_count // local_world
    if per == 0:
        raise ValueError(f"{local_world} processes on this node share {gpu_count} GPU(s): with --device_map "
                         f"each process needs at least one; start at most {gpu_count} per node")
    block = [local_rank * per + i for i in range(per)]
    if max_memory is None:
        import psutil
        import torch
        free_bytes = free_bytes or (lambda i: torch.cuda.mem_get_info(i)[0])
        return {**{gpu: free_bytes(gpu) for gpu in block}, "cpu": psutil.virtual_memory().available}
    out = {}
    for key, size in max_memory.items():
        if isinstance(key, int):
            if key >= per:
                raise ValueError(f"--max_memory names GPU {key}, but each of the {local_world} processes on this "
                                 f"node has {per} GPU(s), counted from 0")
            key = block[key]
        out[key] = size
    return out


def placement(procs, device_map, max_memory):
    """The max_memory this process loads its model with (parsed once, split per process)."""
    max_memory = parse_max_memory(max_memory)
    if not device_map or device_map not in _SPREAD_MAPS or procs.local_world <= 1:
        return max_memory
    import torch
    return rank_max_memory(max_memory, procs.local_rank, procs.local_world, torch.cuda.device_count())


# ----------------------------------------------------------------------------- failures

def install_stop_handler():
    """When one process fails, torchrun stops the others with SIGTERM: make that a DistributedError
    with a clear message instead of a silent death. Returns a function that restores the old handler.
    Does nothing in a single process."""
    if world_size() == 1:
        return lambda: None
    label = process_label().rstrip(": ")

    def stop(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_DFL)        # a second SIGTERM ends the process
        raise DistributedError(f"{label}: stopped by the launcher (SIGTERM), usually because another process "
                               f"of this run failed (its error is above). Rows written so far are kept: "
                               f"rerun the same command with --resume")
    previous = signal.signal(signal.SIGTERM, stop)
    return lambda: signal.signal(signal.SIGTERM, previous)


def crash_point(rank, batches_written):
    """Test hook: with CRASH_ENV="R:N", process R dies (os._exit(3), no cleanup) after writing N batches."""
    if os.environ.get(CRASH_ENV) == f"{rank}:{batches_written}":
        os._exit(3)
