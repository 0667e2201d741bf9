"""Storage: save and load bandwidth of activation records per format, against numpy.save/numpy.load
of the same bytes; file size against tensor bytes; reading one layer against reading them all.

    .venv/bin/python perf/storage_bench.py                       # 71 and 512 positions, 7 repeats
    .venv/bin/python perf/storage_bench.py --positions 71 --repeats 15

The record is what generate_records builds for the default model (SmolLM2-135M: embeddings + 30
layers = 31 tensors of (positions, 576) float32, plus ids and metadata), filled with random
numbers: 71 positions (a 40-token prompt + 32-token answer, 5.07 MB) and 512 positions (36.6 MB).
Variants, interleaved (order rotated every repeat), files in a temporary folder on the same disk:
    save pkl / save safetensors   storage.save_activations (temp file, fsync, rename, fsync dir)
    numpy.save+fsync              numpy.save of one (31, positions, 576) array + fsync: the same
                                  bytes with the same durability (the baseline for the target)
    numpy.save                    plain numpy.save, no fsync (the page cache only)
    numpy.save atomic             numpy.save through storage's own atomic writer (temp file, fsync,
                                  rename, fsync of the folder): the same guarantees as our saves
    load pkl / load safetensors   storage.load_activations (safe unpickler / safetensors' memory
                                  map of the whole file)
    load ... one layer            load_activations(path, layers=["layer_15"]) (.safetensors: one
                                  header parse, then only that tensor's and the ids' bytes)
    numpy.load                    numpy.load of the numpy file (one layer: numpy.load(mmap_mode="r")[15])
Every load then reads one value per 4 KiB page of each loaded tensor (whole .safetensors files
are mapped lazily: without that a "load" reads nothing). Loads run twice: "hot" reads files just
written (page cache: parsing and copying only), "cold" first drops the file's pages from the page
cache (posix_fadvise DONTNEED, untimed; no root needed), so the bytes come from the disk (through
whatever cache the virtual disk's host keeps; note the kernel's read-ahead window,
/sys/block/<dev>/queue/read_ahead_kb, which can pull a whole small file in on the first read).
MB/s counts tensor bytes (activations only). Targets (issue 6): save >= 0.8x numpy's bandwidth;
one-layer read <= 10% of a full read. Writes perf/out/storage.json; prints the tables last.
"""
import os
import shutil
import sys
import tempfile

import common
import numpy as np

RUN_FILES = 20          # files per pass in run_of_files

LAYERS, HIDDEN = 31, 576
SAVE_TARGET, ONE_LAYER_TARGET = 0.8, 0.10
ONE = "layer_15"


def make_record(positions, torch):
    """A record shaped like generate_records' output for the default model (random activations)."""
    g = torch.Generator().manual_seed(0)
    names = ["embeddings"] + [f"layer_{i}" for i in range(LAYERS - 1)]
    prompt = positions - 31
    return {"prompt": "What is the capital of France?", "response": "The capital of France is Paris.",
            "model": "SmolLM2-135M-Instruct", "timestamp": "2025-01-01T00:00:00+00:00",
            "input_ids": torch.arange(prompt), "output_ids": torch.arange(32),
            "activations": {n: torch.randn(positions, HIDDEN, generator=g) for n in names},
            "layer_names": names, "positions": "all", "positions_kept": list(range(positions)),
            "num_prompt_tokens": prompt, "num_generated_tokens": 32, "dtype": "float32",
            "model_info": {"class": "LlamaForCausalLM", "model_type": "llama", "num_layers": 30,
                           "hidden_size": HIDDEN, "dtype": "float32"},
            "generation": {"do_sample": False, "max_new_tokens": 32}, "versions": {"torch": torch.__version__},
            "grading": {"id": "geo-001", "correct": True}}


def main():
    p = common.base_parser(__doc__, repeats=7)
    p.add_argument("--positions", default="71,512", help="positions per record (default 71,512)")
    p.add_argument("--dir", default=None, help="folder for the files (default: a temp folder)")
    args = p.parse_args()
    if args.quick:
        args.repeats = min(args.repeats, 3)
    torch = common.setup(args.threads)
    from activation_eval.store import atomic
    from activation_eval.store import records as storage
    tmp = tempfile.mkdtemp(prefix="perf-storage-", dir=args.dir)
    save_rows, load_rows, size_rows = [], [], []
    try:
        for positions in [int(x) for x in args.positions.split(",")]:
            record = make_record(positions, torch)
            stacked = np.stack([t.numpy() for t in record["activations"].values()])
            nbytes = stacked.nbytes
            paths = {fmt: os.path.join(tmp, f"r{positions}{fmt}") for fmt in (".pkl", ".safetensors", ".npy")}

            def np_save(fsync):
                def go():
                    with open(paths[".npy"], "wb") as f:
                        np.save(f, stacked)
                        if fsync:
                            f.flush()
                            os.fsync(f.fileno())
                return go

            def np_write(tmp_path):        # a file object: np.save would append ".npy" to a path
                with open(tmp_path, "wb") as f:
                    np.save(f, stacked)

            print(f"{positions} positions, {nbytes / 1e6:.2f} MB of activations: saving", file=sys.stderr)
            save = {"pkl": lambda: storage.save_activations(record, paths[".pkl"]),
                    "safetensors": lambda: storage.save_activations(record, paths[".safetensors"]),
                    "numpy.save+fsync": np_save(True), "numpy.save": np_save(False),
                    "numpy.save atomic": lambda: atomic.atomic_write(paths[".npy"], np_write)}
            wall, cpu = common.interleaved(save, args.repeats)
            for name in save:
                st = common.stats(wall[name], wall["numpy.save+fsync"])
                row = {"positions": positions, "op": f"save {name}", "mb": nbytes / 1e6,
                       "mb_per_s": nbytes / 1e6 / st["median_s"], "bandwidth_vs_numpy": 1 / st["paired_ratio"],
                       "bandwidth_vs_numpy_nofsync": statistics_ratio(wall["numpy.save"], wall[name]),
                       "bandwidth_vs_numpy_atomic": statistics_ratio(wall["numpy.save atomic"], wall[name]), **st}
                if name in ("pkl", "safetensors"):
                    row["target"] = f">= {SAVE_TARGET}"
                    row["verdict"] = common.verdict(row["bandwidth_vs_numpy"], SAVE_TARGET, ">=").split()[0]
                save_rows.append(row)

            print(f"{positions} positions: loading", file=sys.stderr)
            for cache in ("hot", "cold"):
                print(f"{positions} positions: loading, {cache} page cache", file=sys.stderr)
                load = {name: (_evictor(paths[ext], cache), fn) for name, ext, fn in [
                    ("pkl", ".pkl", lambda: touch(storage.load_activations(paths[".pkl"]))),
                    ("pkl one layer", ".pkl", lambda: touch(storage.load_activations(paths[".pkl"], layers=[ONE]))),
                    ("safetensors", ".safetensors", lambda: touch(storage.load_activations(paths[".safetensors"]))),
                    ("safetensors one layer", ".safetensors",
                     lambda: touch(storage.load_activations(paths[".safetensors"], layers=[ONE]))),
                    ("numpy.load", ".npy", lambda: touch(np.load(paths[".npy"]))),
                    ("numpy.load one layer", ".npy", lambda: touch(np.load(paths[".npy"], mmap_mode="r")[15]))]}
                wall, cpu = common.interleaved(load, args.repeats)
                for name in load:
                    one = name.endswith("one layer")
                    full = name.replace(" one layer", "")
                    st = common.stats(wall[name], wall["numpy.load"])
                    row = {"positions": positions, "cache": cache, "op": f"load {name}",
                           "mb": nbytes / 1e6 / (LAYERS if one else 1),
                           "mb_per_s": nbytes / 1e6 / (LAYERS if one else 1) / st["median_s"], **st}
                    if one:
                        row["share_of_full_read"] = common.stats(wall[name], wall[full])["paired_ratio"]
                        if name.startswith("safetensors"):
                            row["target"] = f"<= {ONE_LAYER_TARGET}"
                            row["verdict"] = common.verdict(row["share_of_full_read"], ONE_LAYER_TARGET).split()[0]
                    else:
                        row["bandwidth_vs_numpy"] = 1 / st["paired_ratio"]
                    load_rows.append(row)

            load_rows += run_of_files(storage, record, positions, nbytes, tmp, args)
            for fmt, path in paths.items():
                size = os.path.getsize(path)
                size_rows.append({"positions": positions, "format": fmt, "tensor_mb": nbytes / 1e6,
                                  "file_mb": size / 1e6, "overhead": size / nbytes - 1})
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    path = common.write_json("storage", {"args": vars(args), "save": save_rows, "load": load_rows,
                                         "size": size_rows}, args.out)
    print(f"\nwrote {path}\n")
    print(common.table(size_rows, [("positions", "positions", "d"), ("format", "format", ""),
                                   ("tensor_mb", "tensor MB", ".3f"), ("file_mb", "file MB", ".3f"),
                                   ("overhead", "overhead", ".2%")]))
    print()
    print(common.table(save_rows, [("positions", "positions", "d"), ("op", "save", ""), ("median_s", "median s", ".4f"),
                                   ("mb_per_s", "MB/s", ".0f"), ("bandwidth_vs_numpy", "x numpy+fsync", ".2f"),
                                   ("bandwidth_vs_numpy_nofsync", "x numpy", ".2f"),
                                   ("bandwidth_vs_numpy_atomic", "x numpy atomic", ".2f"),
                                   ("target", "target", ""), ("verdict", "verdict", "")]))
    print()
    print(common.table(load_rows, [("positions", "positions", "d"), ("cache", "cache", ""), ("op", "load", ""),
                                   ("median_s", "median s", ".4f"),
                                   ("mb_per_s", "MB/s", ".0f"), ("bandwidth_vs_numpy", "x numpy", ".2f"),
                                   ("share_of_full_read", "of full read", ".1%"),
                                   ("target", "target", ""), ("verdict", "verdict", "")]))


def run_of_files(storage, record, positions, nbytes, tmp, args, n=RUN_FILES):
    """One layer from each of n record files against all of each, one timed call per pass over
    the n files: what reading a layer across a run (storage.load_run_layer) does."""
    paths = [os.path.join(tmp, f"run{positions}_{i}.safetensors") for i in range(n)]
    for path in paths:
        storage.save_activations(record, path)
    rows = []
    for cache in ("hot", "cold"):
        print(f"{positions} positions: {n} files, {cache} page cache", file=sys.stderr)
        evict = (lambda: [common.evict(p) for p in paths]) if cache == "cold" else (lambda: None)
        load = {"safetensors": (evict, lambda: [touch(storage.load_activations(p)) for p in paths]),
                "safetensors one layer": (evict, lambda: [touch(storage.load_activations(p, layers=[ONE]))
                                                          for p in paths])}
        wall, _ = common.interleaved(load, args.repeats)
        for name in load:
            one = name.endswith("one layer")
            st = common.stats(wall[name])
            row = {"positions": positions, "cache": cache, "op": f"load {name}, {n} files",
                   "mb": n * nbytes / 1e6 / (LAYERS if one else 1),
                   "mb_per_s": n * nbytes / 1e6 / (LAYERS if one else 1) / st["median_s"], **st}
            if one:
                row["share_of_full_read"] = common.stats(wall[name], wall["safetensors"])["paired_ratio"]
                row["target"] = f"<= {ONE_LAYER_TARGET}"
                row["verdict"] = common.verdict(row["share_of_full_read"], ONE_LAYER_TARGET).split()[0]
            rows.append(row)
    for path in paths:
        os.remove(path)
    return rows


def _evictor(path, cache):
    return (lambda: common.evict(path)) if cache == "cold" else (lambda: None)


def touch(loaded):
    """Read one value per 4 KiB page of every loaded array: safetensors maps the file lazily, so
    without this a "load" would not read the bytes at all."""
    import torch
    if isinstance(loaded, dict):
        arrays = list(loaded["activations"].values())
    else:
        arrays = [loaded]
    total = 0.0
    for a in arrays:
        flat = a.reshape(-1)
        total += float(flat[::1024].sum()) if isinstance(a, torch.Tensor) else float(np.asarray(flat[::1024]).sum())
    return total


def statistics_ratio(base, times):
    """Bandwidth of `times` relative to `base`: median over repeats of base/time."""
    import statistics
    return statistics.median(b / t for b, t in zip(base, times))


if __name__ == "__main__":
    sys.exit(main())
