"""The fuzzers' shared harness: a worker subprocess per fuzzer (a crash or a hang is a finding, not the end of
the fuzz run), hypothesis strategies of byte and JSON mutations, and the report's tally and loop. The fuzzers
are scripts in this folder: fuzz_records.py (record files, shards, run folders), fuzz_benchmarks.py
(benchmark files), fuzz_analysis.py (analysis modes on producers' run folders).

Public names:
    MEMORY_LIMIT_MB               a worker's peak RSS over this is a finding
    peak_rss_mb()                 this process's peak RSS (VmHWM)
    Worker(loader, script=None)   the worker subprocess: run(path, timeout) -> (kind, detail, rss_mb), stop()
    strategies()                  (seed index strategy, list-of-mutation-ops strategy) for hypothesis
    mutate(data, ops, seeds, ext) -> bytes   `data` after the ops (bit flips, interesting bytes, inserted
                                  snippets, deleted / duplicated / truncated ranges, splices of another seed,
                                  JSON values replaced in .safetensors headers and run files)
    tally(report, worker, fmt, kind, detail, rss, bug_key) -> finding or None
    finished(report, start, seconds, cases=None) -> bool
    run_rounds(one_case, seed, seconds, start, worker, work, report, cases=None) -> report
    SNIPPETS, INTERESTING, JSON_VALUES, RUN_VALUES   what mutations insert

Example (fuzz_records.fuzz, in short):
    worker = Worker("safe", script=os.path.abspath("tests/fuzz_records.py"))
    seed_strategy, ops_strategy = strategies()
    ... one hypothesis case: kind, detail, rss = worker.run(write(mutate(data, ops, seeds, ext)), 30.0)
                             finding = tally(report, worker, ext, kind, detail, rss, "loader_bugs")
    run_rounds(one_case, seed, seconds, time.monotonic(), worker, work, report)
"""
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time

MEMORY_LIMIT_MB = 1024
SNIPPETS = [b"b", b"R", b"0", b"2", b"h\x00", b"h\x01", b"q\x00", b"s", b"a", b"\x90", b"\x91",
            b"t", b"(", b")", b"\x85" * 64, b"]", b"}", b"\x8f", b"N", b"\x88",
            b"J\xff\xff\xff\x7f", b"\x8a\x08" + (2 ** 63 - 1).to_bytes(8, "little"),
            b"cnumpy\ndtype\n", b"ctorch\nfrom_numpy\n", b"cbuiltins\nset\n",
            b"\x96" + (2 ** 40).to_bytes(8, "little"), b"[" * 3000, b'{"a":' * 2000, b"\xe2\x80\xa8", b"\n"]
INTERESTING = [0, 1, 0x7f, 0x80, 0xff, ord("b"), ord("R"), ord("("), ord("t"), ord("\x85")]
JSON_VALUES = [0, -1, 1, 2 ** 31, 2 ** 63, 2 ** 64, 10 ** 30, 1.5, None, True, "", "F64",
               "BOOL", "activations", [], {}, [2 ** 63, 2 ** 63, 0], "[]", '"x"', "{}", "null"]
RUN_VALUES = JSON_VALUES + [99, "5", "q1", "q0", "\ud800", "$\\foo{$", "../results.jsonl", "/dev/zero",
                            "activations/units/abcdef1.safetensors", "activations", ["x", 1], {"a": 1},
                            "[" * 150 + "]" * 150, [[[[[[[[[[[]]]]]]]]]]], float("nan"), "a\u2028b",
                            json.loads("[" * 500 + "]" * 500)]


# ----------------------------------------------------------------------------- worker

def peak_rss_mb():
    """This process's peak RSS in MB: VmHWM where /proc has it (ru_maxrss would include the
    parent's memory at fork, which Linux carries across exec), else ru_maxrss."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) // 1024
    except (OSError, StopIteration):
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024


class Worker:
    """One worker subprocess (`script` --worker --loader `loader`); restarted after a crash, hang or memory
    finding. A fuzzer whose worker takes other arguments overrides start()."""

    def __init__(self, loader, script=None):
        self.loader, self.script, self.proc = loader, script, None

    def start(self):
        """Start the worker (its imports take a while: run() waits for them)."""
        self.proc = subprocess.Popen([sys.executable, self.script, "--worker",
                                      "--loader", self.loader], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     text=True, start_new_session=True)
        self.ready = False

    def wait_ready(self):
        if self.proc is None:
            self.start()
        if not self.ready:
            if self.proc.stdout.readline().strip() != "ready":
                raise RuntimeError("the fuzz worker did not start")
            self.ready = True

    def run(self, path, timeout):
        """(kind, detail, rss_mb): kind "answer" (detail = outcome), "crash" or "hang"."""
        self.wait_ready()
        try:
            self.proc.stdin.write(path + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            return self._dead()
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            self.stop()
            return "hang", f"no answer in {timeout} s", None
        line = self.proc.stdout.readline()
        if not line:
            return self._dead()
        answer = json.loads(line)
        return "answer", answer["outcome"], answer["rss_mb"]

    def _dead(self):
        code = self.proc.wait()
        self.proc = None
        name = signal.Signals(-code).name if code < 0 else f"exit {code}"
        return "crash", name, None

    def stop(self):
        if self.proc is not None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            self.proc = None


# ----------------------------------------------------------------------------- mutations

def strategies():
    from hypothesis import strategies as st
    pos = st.floats(0, 1, exclude_max=True)
    byte_ops = st.one_of(
        st.tuples(st.just("flip"), pos, st.integers(0, 7)),
        st.tuples(st.just("set"), pos, st.one_of(st.sampled_from(INTERESTING),
                                                 st.integers(0, 255))),
        st.tuples(st.just("insert"), pos, st.one_of(st.sampled_from(SNIPPETS),
                                                    st.binary(min_size=1, max_size=16))),
        st.tuples(st.just("delete"), pos, st.integers(1, 64)),
        st.tuples(st.just("duplicate"), pos, pos, st.integers(1, 256)),
        st.tuples(st.just("truncate"), pos),
        st.tuples(st.just("splice"), st.integers(0, 10 ** 6), pos, pos),
        st.tuples(st.just("json"), st.integers(0, 10 ** 6), st.sampled_from(JSON_VALUES)))
    return st.integers(0, 10 ** 6), st.lists(byte_ops, max_size=6)


def _set_json_value(data, index, value):
    """A .safetensors file whose index-th header value (depth-first) is replaced by `value`."""
    n = int.from_bytes(data[:8], "little")
    try:
        header = json.loads(data[8:8 + n])
    except ValueError:
        return data
    slots = []

    def walk(node):
        items = node.items() if isinstance(node, dict) else enumerate(node) \
            if isinstance(node, list) else ()
        for key, child in items:
            slots.append((node, key))
            walk(child)
    walk(header)
    if slots:
        node, key = slots[index % len(slots)]
        node[key] = value
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text + data[8 + n:]


def _set_text_value(data, index, value):
    """A JSON / JSON-lines text whose index-th value (depth-first over its lines) is `value`."""
    lines = data.split(b"\n")
    try:
        docs = [json.loads(line) if line.strip() else None for line in lines]
    except (ValueError, RecursionError):         # a torn or deep seed: byte mutations only
        return data
    slots = []

    def walk(node):
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        for key, child in list(items):
            slots.append((node, key))
            walk(child)
    for doc in docs:
        walk(doc)
    if slots:
        node, key = slots[index % len(slots)]
        node[key] = value
    return b"\n".join(json.dumps(d, ensure_ascii=False).encode("utf-8", "backslashreplace")
                      if d is not None else line for d, line in zip(docs, lines))


def mutate(data, ops, seeds, ext):
    """`data` after the mutation ops (positions are fractions of the current length)."""
    data = bytearray(data)
    for op in ops:
        at = lambda f: int(f * (len(data) + 1))          # noqa: E731, B023 (used within this iteration)
        kind = op[0]
        if kind == "flip" and data:
            i = min(at(op[1]), len(data) - 1)
            data[i] ^= 1 << op[2]
        elif kind == "set" and data:
            data[min(at(op[1]), len(data) - 1)] = op[2]
        elif kind == "insert":
            data[at(op[1]):at(op[1])] = op[2]
        elif kind == "delete":
            del data[at(op[1]):at(op[1]) + op[2]]
        elif kind == "duplicate":
            start = at(op[1])
            data[at(op[2]):at(op[2])] = data[start:start + op[3]]
        elif kind == "truncate":
            del data[at(op[1]):]
        elif kind == "splice":
            other = seeds[op[1] % len(seeds)][1]
            data[at(op[2]):] = other[int(op[3] * len(other)):]
        elif kind == "json" and ext in ("safetensors", "shard", "runshard"):
            data = bytearray(_set_json_value(bytes(data), op[1], op[2]))
        elif kind == "json" and ext in ("results", "config", "summary"):
            data = bytearray(_set_text_value(bytes(data), op[1], RUN_VALUES[op[1] % len(RUN_VALUES)]))
    return bytes(data)


# ----------------------------------------------------------------------------- the report and the loop

def tally(report, worker, fmt, kind, detail, rss, bug_key):
    """Count one case's outcome in `report` (every fuzzer's); -> what to save it as
    a finding for (None: nothing found). `bug_key`: the report's counter of errors other than ours."""
    report["executions"] += 1
    report["by_format"][fmt] = report["by_format"].get(fmt, 0) + 1
    if kind == "crash":
        report["crashes"] += 1
        return f"crash ({detail})"
    if kind == "hang":
        report["hangs"] += 1
        return detail
    finding = None
    report["peak_rss_mb"] = max(report["peak_rss_mb"], rss)
    outcome = detail[0] if isinstance(detail, list) else detail
    report["outcomes"][outcome] = report["outcomes"].get(outcome, 0) + 1
    if outcome == "analysis":
        errors = report.setdefault("analysis_errors", {})
        errors[detail[1]] = errors.get(detail[1], 0) + 1
    elif outcome == "bug":
        report[bug_key] += 1
        finding = detail[1]
    if rss > MEMORY_LIMIT_MB:
        report["memory"] += 1
        finding = f"peak RSS {rss} MB"
        worker.stop()                    # a fresh worker: its peak starts again
    return finding


def finished(report, start, seconds, cases=None):
    """Whether the fuzzing is over: `seconds` have passed since `start`, or `cases` mutated cases (executions
    beyond the seeds' own) have run (every fuzzer's)."""
    return time.monotonic() - start >= seconds or (cases is not None and report["executions"] >= report["seeds"] + cases)


def run_rounds(one_case, seed, seconds, start, worker, work, report, cases=None):
    """Run hypothesis rounds of `one_case` until finished() (`seconds` since `start`, or `cases` mutated
    cases), then stop the worker, remove the work folder and add the timing to `report` (every fuzzer's)."""
    from hypothesis import seed as hypothesis_seed
    round_ = 0
    try:
        while not finished(report, start, seconds, cases):
            hypothesis_seed(seed * 1_000_003 + round_)(one_case)()
            round_ += 1
    finally:
        worker.stop()
        shutil.rmtree(work, ignore_errors=True)
    elapsed = time.monotonic() - start
    report["seconds"] = round(elapsed, 1)
    report["minutes"] = round(elapsed / 60, 2)
    report["executions_per_second"] = round(report["executions"] / elapsed, 1)
    return report
