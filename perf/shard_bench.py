"""Shard store against the per-question file store: write rate, one layer across a big run cold,
peak memory (storage layer alone, synthetic records).

    .venv/bin/python perf/shard_bench.py                 # 100k questions (7.1 GB on disk, removed after)
    .venv/bin/python perf/shard_bench.py --quick         # 5k questions: a smoke run

Records have the default model's shapes at --positions last_prompt: embeddings + 30 layers = 31
tensors of (1, 576) float32 (71 KB), ~45 input and ~10 output ids, and the metadata fields a real
record carries (prompt, response, model summary, generation settings, versions, grading). The
activations are random; a pool of 64 distinct records is reused under fresh question ids.

Write (interleaved repeats, fresh folder each): "shards" = the runner's shard writer
(the run writer's shard store) on units of 64 questions (the runner's unit at --batch_size 8):
units are held until they reach --shard_mb (default: main.py's --shard_size_mb, 256 MB, ~3,600
questions here), then written as one shard (atomic, one fsync) and their rows appended to
results.jsonl (one fsync); "shards, one unit each" = the same with --shard_size_mb 0;
"files .pkl" / "files .safetensors" = store.records.save_activations per question (atomic, one
fsync each) and its row appended (one fsync), as the runner does, on fewer questions
(--file_questions) because they are slower. Rows are the runner's results rows (~0.6 KB of JSON).
The big run gives every record its own tensors (as a real run does), so its RSS shows what the
held units cost.
Read, cold (every file's pages dropped with posix_fadvise DONTNEED first, untimed; the virtual
disk's host may still cache): "layer_15, shards" = read_shard_layers of the shards (the storage
layer: one [rows, 576] tensor per shard, 8 reads at a time); "load_run_layer, shards" = the user's call, including
parsing the 100k-row results.jsonl and reduce=last_prompt; "numpy.load" = one np.load of an .npy holding the same
bytes (n x 576 float32): the baseline; "load_run_layer, files" on --file_questions files,
extrapolated per question; "one record" = load_activations(run, question_id=...) of 21 questions
spread over the run, each cold (median). "q per CPU s" divides by this process's CPU time (the sampling thread
included), which other jobs on a shared machine disturb far less than wall time. Memory: resident
set size sampled every 5 ms by a thread.
Targets (issue 15): write >= 2000 questions/s; one layer across 100k questions cold <= 2 s and
>= 50% of numpy.load's bandwidth (the storage layer; load_run_layer, which also parses the 63 MB
results.jsonl into 100k row dicts, is held to <= 2 s); peak memory flat while writing. Writes perf/out/shard_bench.json.
"""
import os
import shutil
import sys
import tempfile
import threading
import time

import common
import numpy as np

LAYERS, HIDDEN, UNIT = 31, 576, 64
ONE = "layer_15"
WRITE_TARGET, READ_TARGET_S, READ_VS_NUMPY = 2000, 2.0, 0.5


def record_pool(torch, n=UNIT):
    g = torch.Generator().manual_seed(0)
    names = ["embeddings"] + [f"layer_{i}" for i in range(LAYERS - 1)]
    pool = []
    for i in range(n):
        prompt = 40 + i % 11
        pool.append({
            "prompt": f"Question {i}: what is the capital of France? Answer with one word.",
            "response": "Paris.", "model": "SmolLM2-135M-Instruct", "timestamp": "2026-11-28T00:00:00+00:00",
            "input_ids": torch.arange(prompt), "output_ids": torch.arange(10),
            "model_info": {"class": "LlamaForCausalLM", "model_type": "llama", "num_layers": 30,
                           "hidden_size": HIDDEN, "dtype": "float32"},
            "versions": {"torch": torch.__version__, "transformers": "5", "activation_eval": "0.2.0"},
            "generation": {"max_new_tokens": 32, "chat_template": True, "decoding": "continuous"},
            "num_prompt_tokens": prompt, "num_generated_tokens": 10,
            "activations": {n_: torch.randn(1, HIDDEN, generator=g) for n_ in names},
            "layer_names": names, "positions": "last_prompt", "positions_kept": [prompt - 1], "dtype": "float32",
            "grading": {"id": f"q{i}", "category": "geography", "answer": ["Paris"], "extracted": "paris",
                        "correct": bool(i % 2), "grader": "text"}})
    return pool


def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class PeakRss:
    """The peak resident set size while the block runs (sampled every 5 ms), in MB."""
    def __enter__(self):
        self.start, self.peak, self._stop = rss_mb(), rss_mb(), threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, rss_mb())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_mb())


def results_row(qid, record):
    """A results row as the runner writes it (eval.answering.RESULT_FIELDS), ~0.6 KB of JSON."""
    grading = record["grading"]
    return {"id": qid, "category": grading["category"], "question": record["prompt"],
            "prompt": "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
                      "Face<|im_end|>\n<|im_start|>user\n" + record["prompt"] + "<|im_end|>\n<|im_start|>assistant\n",
            "response": record["response"], "answer": grading["answer"], "extracted": grading["extracted"],
            "correct": grading["correct"], "grader": grading["grader"],
            "num_prompt_tokens": record["num_prompt_tokens"], "num_generated_tokens": record["num_generated_tokens"]}


def write_shard_run(folder, pool, n, shard_mb, fresh=False, rss=None):
    """n questions through the run writer's shard store (store/run_writer.RunWriter): units of UNIT
    questions, a shard written (atomic, one fsync) when the held units reach `shard_mb` MB, then
    its rows appended to results.jsonl (one fsync). fresh: every record gets its own activation
    tensors (as a real run's do: what memory holds), else the pool's are shared. RSS after every unit."""
    from activation_eval.store.run_writer import RunWriter
    writer = RunWriter(folder, "main", store="shards", shard_bytes=int(shard_mb * 2**20))
    os.makedirs(os.path.join(folder, "activations"), exist_ok=True)
    for start in range(0, n, UNIT):
        key = f"{start:012x}"
        for q in range(start, min(n, start + UNIT)):
            record = own_record(pool[q % len(pool)], f"q{q:07d}")       # a record is its row's (run_reader checks)
            if fresh:
                record = {**record, "activations": {k: t.clone() for k, t in record["activations"].items()}}
            writer.add({**results_row(f"q{q:07d}", record), "unit": key}, record)
        if writer.full():
            writer.flush()
        if rss is not None:
            rss.append(rss_mb())
    writer.flush()


def own_record(record, qid):
    """The pooled record as question `qid`'s: its grading names it (the tensors are shared)."""
    return {**record, "grading": {**record["grading"], "id": qid}}


def write_file_run(records, run_folder, pool, folder, n, fmt):
    """n questions through the file store as the runner writes them (the run writer, one flush per
    question): the record file (atomic, fsync), then its row appended to results.jsonl (fsync)."""
    from activation_eval.store.run_writer import RunWriter
    writer = RunWriter(folder, "main", record_format=fmt)
    os.makedirs(os.path.join(folder, "activations"), exist_ok=True)
    for q in range(n):
        qid = f"q{q:07d}"
        writer.add(results_row(qid, record := own_record(pool[q % len(pool)], qid)), record)
        writer.flush()


def one_record(run, n, cold, store, lookups=21):
    """load_activations(run, question_id=...) of one question, every file's pages dropped first
    (the results rows are parsed once, before: a notebook's repeated look-ups share them)."""
    from activation_eval.store.run_reader import load_activations
    load_activations(run, question_id="q0000000")
    times = []
    for k in range(lookups):
        qid = f"q{k * (n - 1) // (lookups - 1):07d}"
        cold(os.path.join(run, "activations"))()
        start = time.perf_counter()
        record = load_activations(run, question_id=qid)
        times.append(time.perf_counter() - start)
        assert len(record["activations"]) == LAYERS
    st = common.stats(times)
    return {"op": f"read cold, one record, load_activations(run, id), {store}", "questions": 1, **st}


def evict_tree(folder):
    for root, _, names in os.walk(folder):
        for name in names:
            common.evict(os.path.join(root, name))


def main():
    p = common.base_parser(__doc__, repeats=3)
    p.add_argument("--questions", type=int, default=100_000, help="questions of the big run (default 100000)")
    p.add_argument("--write_questions", type=int, default=10_000, help="questions per timed shard write")
    p.add_argument("--file_questions", type=int, default=1000, help="questions for the file store (default 1000)")
    p.add_argument("--dir", default=None, help="folder for the files (default: a temp folder)")
    p.add_argument("--shard_mb", type=float, default=None, help="--shard_size_mb of the shard runs (default: main.py's)")
    args = p.parse_args()
    if args.quick:
        args.questions, args.write_questions, args.file_questions = 5000, 2000, 300
        args.repeats = min(args.repeats, 2)
    torch = common.setup(args.threads)
    from activation_eval.run.config import DEFAULT_SHARD_MB
    args.shard_mb = DEFAULT_SHARD_MB if args.shard_mb is None else args.shard_mb
    from activation_eval.analysis.dataset import load_run_layer
    from activation_eval.store import records, run_folder, shards
    pool = record_pool(torch)
    tmp = tempfile.mkdtemp(prefix="perf-shards-", dir=args.dir)
    rows_out = []
    try:
        # ---------------------------------------------------------------- write rate
        counter = iter(range(10 ** 6))

        def fresh():
            return os.path.join(tmp, f"w{next(counter)}")
        folders = {}

        def variant(name, write):
            def prepare():
                old = folders.pop(name, None)
                if old:
                    shutil.rmtree(old)
                folders[name] = fresh()
            return prepare, lambda: write(folders[name])
        nw, nf = args.write_questions, args.file_questions
        mb = args.shard_mb
        write = {"shards": variant("shards", lambda d: write_shard_run(d, pool, nw, mb)),
                 "shards, one unit each": variant("unit", lambda d: write_shard_run(d, pool, nw, 0)),
                 "files .pkl": variant("pkl", lambda d: write_file_run(records, run_folder, pool, d, nf, "pkl")),
                 "files .safetensors": variant("st", lambda d: write_file_run(records, run_folder, pool, d, nf,
                                                                               "safetensors"))}
        print("writing", file=sys.stderr)
        wall, cpu = common.interleaved(write, args.repeats, warmup=0)
        for name, n in [("shards", nw), ("shards, one unit each", nw), ("files .pkl", nf), ("files .safetensors", nf)]:
            st = common.stats(wall[name])
            row = {"op": f"write, {name}", "questions": n, "q_per_s": n / st["median_s"],
                   "q_per_cpu_s": n / common.stats(cpu[name])["median_s"],
                   "mb_per_s": n * LAYERS * HIDDEN * 4 / 1e6 / st["median_s"], **st}
            if name == "shards":
                row.update(target=f">= {WRITE_TARGET} q/s",
                           verdict=common.verdict(row["q_per_s"], WRITE_TARGET, ">=").split()[0])
            rows_out.append(row)
        for folder in folders.values():
            shutil.rmtree(folder)

        # ---------------------------------------------------------------- the big run
        big = os.path.join(tmp, "big")
        print(f"writing {args.questions} questions as shards", file=sys.stderr)
        rss = []
        with PeakRss() as mem:
            start, cpu_start = time.perf_counter(), time.process_time()
            write_shard_run(big, pool, args.questions, mb, fresh=True, rss=rss)
            elapsed, cpu_s = time.perf_counter() - start, time.process_time() - cpu_start
        q = len(rss)
        rows_out.append({"op": "write, shards, the big run", "questions": args.questions,
                         "q_per_s": args.questions / elapsed, "median_s": elapsed,
                         "q_per_cpu_s": args.questions / cpu_s,
                         "mb_per_s": args.questions * LAYERS * HIDDEN * 4 / 1e6 / elapsed,
                         "rss_mb": f"peak {max(rss[:q // 2]):.0f} / {max(rss[q // 2:]):.0f} (1st / 2nd half), "
                                   f"start {mem.start:.0f}",
                         "target": "flat: 2nd half peak < 1st + 50 MB",
                         "verdict": ("PASS" if max(rss[q // 2:]) - max(rss[:q // 2]) < 50 else "MISS")
                                    if len(os.listdir(os.path.join(big, "activations", "units"))) >= 4
                                    else "- (under 4 shards)"})
        layer_bytes = args.questions * HIDDEN * 4
        npy = os.path.join(tmp, "layer.npy")
        np.save(npy, np.random.default_rng(0).standard_normal((args.questions, HIDDEN), dtype=np.float32))
        shard_paths = sorted(os.path.join(dp, f) for dp, _, fs in os.walk(os.path.join(big, "activations"))
                             for f in fs)

        def read_layer():
            return shards.read_shard_layers(shard_paths, ONE)

        def cold(folder_or_file):
            return lambda: evict_tree(folder_or_file) if os.path.isdir(folder_or_file) else common.evict(folder_or_file)

        reads = {"numpy.load": (cold(npy), lambda: np.load(npy)),
                 f"{ONE}, shards": (cold(big), read_layer),
                 f"load_run_layer {ONE}, shards": (cold(big), lambda: load_run_layer(big, ONE))}
        print("reading one layer, cold", file=sys.stderr)
        wall, cpu = common.interleaved(reads, args.repeats, warmup=0)
        with PeakRss() as mem:
            reads[f"load_run_layer {ONE}, shards"][0]()
            X, _ = load_run_layer(big, ONE)
        assert X.shape == (args.questions, HIDDEN)
        del X
        base = wall["numpy.load"]
        for name in reads:
            st = common.stats(wall[name], base)
            row = {"op": f"read cold, {name}", "questions": args.questions, "mb_per_s": layer_bytes / 1e6 / st["median_s"],
                   "q_per_cpu_s": args.questions / common.stats(cpu[name])["median_s"],
                   "q_per_s": args.questions / st["median_s"], "vs_numpy": 1 / st["paired_ratio"], **st}
            if name.startswith("load_run_layer"):
                row["rss_mb"] = f"+{mem.peak - mem.start:.0f} (output {layer_bytes / 2**20:.0f})"
            if name.startswith("load_run_layer"):   # also parses results.jsonl: numpy reads no such thing
                ok = st["median_s"] <= READ_TARGET_S
                row.update(target=f"<= {READ_TARGET_S} s", verdict="PASS" if ok else "MISS")
            elif name != "numpy.load":
                ok = st["median_s"] <= READ_TARGET_S and row["vs_numpy"] >= READ_VS_NUMPY
                row.update(target=f"<= {READ_TARGET_S} s, >= {READ_VS_NUMPY:.0%} numpy", verdict="PASS" if ok else "MISS")
            rows_out.append(row)
        rows_out.append(one_record(big, args.questions, cold, "shards"))
        shutil.rmtree(big)

        # ---------------------------------------------------------------- the file store's read
        files = os.path.join(tmp, "files")
        print(f"writing {args.file_questions} per-question .safetensors files", file=sys.stderr)
        write_file_run(records, run_folder, pool, files, args.file_questions, "safetensors")
        wall, _ = common.interleaved({"files": (cold(files), lambda: load_run_layer(files, ONE))}, args.repeats,
                                     warmup=0)
        rows_out.append(one_record(files, args.file_questions, cold, "files"))
        st = common.stats(wall["files"])
        rows_out.append({"op": f"read cold, load_run_layer {ONE}, files", "questions": args.file_questions,
                         "q_per_s": args.file_questions / st["median_s"],
                         "mb_per_s": args.file_questions * HIDDEN * 4 / 1e6 / st["median_s"],
                         "extrapolated": f"{args.questions / args.file_questions * st['median_s']:.1f} s "
                                         f"for {args.questions}", **st})
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    path = common.write_json("shard_bench", {"args": vars(args), "rows": rows_out}, args.out)
    print(f"\nwrote {path}\n")
    print(common.table(rows_out, [("op", "operation", ""), ("questions", "questions", "d"),
                                  ("median_s", "median s", ".3f"), ("q_per_s", "questions/s", ".0f"),
                                  ("q_per_cpu_s", "q per CPU s", ".0f"),
                                  ("mb_per_s", "MB/s", ".0f"), ("vs_numpy", "x numpy.load", ".2f"),
                                  ("rss_mb", "RSS MB", ""), ("extrapolated", "extrapolated", ""),
                                  ("target", "target", ""), ("verdict", "verdict", "")]))


if __name__ == "__main__":
    sys.exit(main())
