"""Small helpers shared by the perf/ scripts: setup, interleaved timing, tables, JSON, models.

Public names:
    setup(threads)                  offline hub, quiet logs, torch thread count
    base_parser(doc, repeats)       argparse with --repeats, --threads, --quick, --out
    machine_info()                  CPU model, cores, threads, versions, GPU (for every JSON file)
    interleaved(variants, repeats)  ({name: [wall s]}, {name: [CPU s]}): rotating order per repeat
    stats(times, base, prefix)      median/min seconds, ratio of medians/mins, median paired ratio
    table(rows, columns)            an aligned text table (printed last by every script)
    verdict(value, target, op)      "PASS" / "MISS" line text for a target
    write_json(name, payload)       perf/out/<name>.json (perf/out/ is gitignored)
    prompts(n)                      the first n built-in benchmark questions as prompts
    tiny_llama(tokenizer)           a random-weight Llama (hidden 64, 3 layers) on the given tokenizer
    evict(path)                     drop a file's pages from the page cache (cold reads)

Every script compares its variants in ONE process: each repeat runs every variant once, in an
order rotated by one per repeat (so no variant always runs first or last), and reports medians.
The machine is noisy (other jobs share its cores), so ratios use the median of per-repeat ratios
against the baseline measured in the same repeat ("paired" ratios), next to the ratio of medians.
"""
import argparse
import gc
import json
import logging
import os
import platform
import statistics
import sys
import time
import warnings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT_DIR = os.path.join(ROOT, "perf", "out")


def setup(threads=None):
    """Offline hub, quiet logging/progress bars, and a fixed torch thread count (the package is
    imported as installed by `make setup`)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TQDM_DISABLE", "1")           # runner's progress bar: off while timing
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.basicConfig(level=logging.WARNING)
    for name in ("transformers", "runner", "models"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    import torch
    import transformers
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    if threads:
        torch.set_num_threads(threads)
    return torch


def base_parser(doc, repeats=5, threads=1):
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=doc)
    p.add_argument("--repeats", type=int, default=repeats, metavar="N",
                   help=f"timed repeats per variant, interleaved (default {repeats})")
    p.add_argument("--threads", type=int, default=threads, metavar="N",
                   help=f"torch.set_num_threads (default {threads}; 0 = torch's default)")
    p.add_argument("--quick", action="store_true", help="fewer repeats and smaller sizes (a smoke run)")
    p.add_argument("--out", default=None, metavar="PATH", help="JSON output (default perf/out/<script>.json)")
    return p


def machine_info():
    import torch
    import transformers
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "platform": platform.platform()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    try:
        info["loadavg_1m"] = os.getloadavg()[0]
    except OSError:
        pass
    return info


def _sync():
    import torch
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def time_call(fn):
    """(wall seconds, process CPU seconds) of one call of fn (GPU work included: synchronizes).

    fn may be a pair (prepare, fn): prepare() runs first, untimed (e.g. evicting a file's pages).
    """
    if isinstance(fn, tuple):
        prepare, fn = fn
        prepare()
    gc.collect()
    _sync()
    cpu, start = time.process_time(), time.perf_counter()
    fn()
    _sync()
    return time.perf_counter() - start, time.process_time() - cpu


def interleaved(variants, repeats, warmup=1, log=True):
    """Run every variant `warmup` times untimed, then `repeats` times each, order rotated per repeat.

    variants: {name: zero-argument callable, or (prepare, callable)}. Returns ({name: [wall s]}, {name: [CPU s]}).
    CPU time (this process, all its threads) is what one-thread runs are judged on: other jobs on
    the machine stretch wall time but hardly this process's own CPU time.
    """
    names = list(variants)
    for _ in range(warmup):
        for name in names:
            time_call(variants[name])
    wall, cpu = {name: [] for name in names}, {name: [] for name in names}
    for r in range(repeats):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            w, c = time_call(variants[name])
            wall[name].append(w)
            cpu[name].append(c)
        if log:
            print(f"  repeat {r + 1}/{repeats}: " + "  ".join(f"{n} {wall[n][-1]:.3f}s" for n in names),
                  file=sys.stderr, flush=True)
    return wall, cpu


def stats(times, base=None, prefix=""):
    """Summary of one variant's times; with `base` (the baseline's times, same repeats) ratios too."""
    out = {prefix + "median_s": statistics.median(times), prefix + "min_s": min(times),
           prefix + "times_s": [round(t, 5) for t in times]}
    if base is not None:
        out[prefix + "ratio_of_medians"] = statistics.median(times) / statistics.median(base)
        out[prefix + "paired_ratio"] = statistics.median(t / b for t, b in zip(times, base))
        out[prefix + "ratio_of_mins"] = min(times) / min(base)
    return out


def table(rows, columns):
    """rows: list of dicts; columns: list of (key, header, format). Returns an aligned table."""
    cells = [[h for _, h, _ in columns]]
    for row in rows:
        cells.append([_fmt(row.get(k), f) for k, _, f in columns])
    widths = [max(len(c[i]) for c in cells) for i in range(len(columns))]
    lines = []
    for j, line in enumerate(cells):
        lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths))))
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _fmt(value, fmt):
    if value is None:
        return "-"
    if fmt and not isinstance(value, str):
        return format(value, fmt)
    return str(value)


def verdict(value, target, op="<="):
    ok = value <= target if op == "<=" else value >= target
    return f"{'PASS' if ok else 'MISS'} ({value:.3f} {op} {target})"


def write_json(name, payload, path=None):
    path = path or os.path.join(OUT_DIR, f"{name}.json")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    payload = {"script": name, "command": " ".join([os.path.relpath(sys.argv[0], ROOT)] + sys.argv[1:]),
               "machine": machine_info(), "time": time.strftime("%Y-%m-%dT%H:%M:%S"), **payload}
    with open(path, "w") as f:
        json.dump(payload, f, indent=2, default=str)
    return path


def prompts(n):
    """The first n built-in questions as prompts (repeated if n > 122)."""
    from activation_eval.eval.benchmark import format_question, load_benchmark
    rows = load_benchmark()
    return [format_question(rows[i % len(rows)]) for i in range(n)]


def tiny_llama(tokenizer, hidden=64, layers=3, dtype=None, device=None):
    """A random-weight Llama from a config (like tests/conftest.py), on the default tokenizer's vocab."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=2048, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    model = AutoModelForCausalLM.from_config(config, dtype=dtype or torch.float32)
    if device:
        model.to(device)
    model.eval()
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.name_or_path_for_records = f"tiny-random-llama-h{hidden}-l{layers}"
    return model


def evict(path):
    """Drop a file's pages from the page cache (no root needed: POSIX_FADV_DONTNEED on clean pages)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
