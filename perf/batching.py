"""Batching: questions per second of a benchmark run at batch size 1, 4, 8 and 16.

    .venv/bin/python perf/batching.py                           # 48 questions, 3 repeats, 1 thread
    .venv/bin/python perf/batching.py --threads 2 --limit 64 --batches 1,8,16,32

Each variant is one `runner.run_benchmark(RunConfig(limit=N, batch_size=B, ...))` call (main.py
without capture) into a fresh temporary folder; the model is loaded once, before timing. The
runner sorts the questions by prompt length into units (runner.plan_batches) and rewrites
results.jsonl in benchmark order at the end; this script checks that order after every run.
"B" variants use the default decoding (continuous batching: B rows decode at once and a finished
row is refilled at once); "8 generate" is --no_continuous_batching (model.generate batches of 8,
the decoding before continuous batching) and "8 unsorted" (with --unsorted) also patches the
sorting out. Variants run interleaved, order rotated every repeat; medians are reported.
Measures per variant: "decode use" = useful row-steps (each answer's tokens but its first) over
B x one-token forwards, i.e. the share of decode slots that did useful work (model.generate
spends the rest on rows that already hit EOS; continuous batching only on the emptying end of a
unit); "pad tokens" (model.generate variants) = share of prompt slots that are left padding.
A cost model comes last: prefill and decode-step times per batch size, timed with generate alone.
Target (issue 6, CPU, default model): batch 8 >= 3x the questions per second of batch 1.
Writes perf/out/batching.json; prints the table last.
"""
import json
import os
import shutil
import sys
import tempfile

import common

TARGET = 3.0
SORTER = None   # the runner's length-sorting function (plan_batches; length_sorted_batches before)


def main():
    p = common.base_parser(__doc__, repeats=3)
    p.add_argument("--limit", type=int, default=48, help="questions per run (default 48)")
    p.add_argument("--batches", default="1,4,8,16", help="batch sizes (default 1,4,8,16)")
    p.add_argument("--max_new_tokens", type=int, default=32)
    p.add_argument("--model", default=None, help="model name/path (default: the project's default model)")
    p.add_argument("--unsorted", action="store_true", help="add '8 unsorted' (model.generate, benchmark order)")
    p.add_argument("--no_generate", action="store_true", help="skip the '8 generate' variant")
    p.add_argument("--no_cost_model", action="store_true", help="skip timing prefill and decode steps")
    args = p.parse_args()
    if args.quick:
        args.repeats, args.limit = min(args.repeats, 1), min(args.limit, 16)
    common.setup(args.threads)
    from activation_eval.eval.benchmark import load_benchmark
    from activation_eval.models import DEFAULT_MODEL, load_model
    from activation_eval.run import runner
    from activation_eval.run.config import RunConfig
    model_name = args.model or DEFAULT_MODEL
    global SORTER
    SORTER = "plan_batches" if hasattr(runner, "plan_batches") else "length_sorted_batches"
    expected_ids = [row["id"] for row in load_benchmark()[: args.limit]]
    tmp_root = tempfile.mkdtemp(prefix="perf-batching-")
    padding, waste = {}, {}

    model, _ = load_model(model_name)
    steps = []

    def count_steps(module, args_, out):
        if out.shape[1] == 1:
            steps.append(out.shape[0])
    model.get_input_embeddings().register_forward_hook(count_steps)

    def run(name, batch_size, sort=True, continuous=True):
        out = os.path.join(tmp_root, name.replace(" ", "_"))
        shutil.rmtree(out, ignore_errors=True)
        config = RunConfig(model=model_name, limit=args.limit, batch_size=batch_size,
                                  max_new_tokens=args.max_new_tokens, output_dir=out,
                                  continuous_batching=continuous)
        real = getattr(runner, SORTER)

        def batches(rows, tokenizer, chat_template, size):
            made = real(rows, tokenizer, chat_template, size) if sort else \
                [rows[s:s + size] for s in range(0, len(rows), size)]
            if not continuous:
                padding[name] = _padding_share(made, tokenizer, chat_template)
            return made
        setattr(runner, SORTER, batches)
        steps.clear()
        try:
            runner.run_benchmark(config)
        finally:
            setattr(runner, SORTER, real)
        with open(os.path.join(out, "results.jsonl")) as f:
            results = [json.loads(line) for line in f]
        ids = [r["id"] for r in results]
        useful = sum(max(r["num_generated_tokens"], 1) - 1 for r in results)
        waste[name] = useful / (len(steps) * batch_size) if steps else 1.0
        if ids != expected_ids:
            raise SystemExit(f"{name}: results.jsonl is not in benchmark order")
        shutil.rmtree(out, ignore_errors=True)

    sizes = [int(b) for b in args.batches.split(",")]
    variants = {f"{b}": (lambda b=b: run(f"{b}", b)) for b in sizes}
    if not args.no_generate and 8 in sizes:
        variants["8 generate"] = lambda: run("8 generate", 8, continuous=False)
    if args.unsorted and 8 in sizes:
        variants["8 unsorted"] = lambda: run("8 unsorted", 8, sort=False, continuous=False)
    try:
        # one short untimed run warms the model, tokenizer and caches
        runner.run_benchmark(RunConfig(model=model_name, limit=8, batch_size=8, max_new_tokens=args.max_new_tokens,
                                    output_dir=os.path.join(tmp_root, "warmup")))
        wall, cpu = common.interleaved(variants, args.repeats, warmup=0)
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)
    base = str(sizes[0])
    rows = []
    for name in wall:
        st = common.stats(wall[name], wall[base] if name != base else None)
        row = {"batch": name, "questions_per_s": args.limit / st["median_s"],
               "speedup": 1 / st["paired_ratio"] if name != base else 1.0,
               "padding_share": padding.get(name), "decode_use": waste.get(name), **st}
        if name == "8" and base == "1":
            row["target"] = f">= {TARGET}x"
            row["verdict"] = common.verdict(row["speedup"], TARGET, ">=").split()[0]
        rows.append(row)
    costs = [] if args.no_cost_model or args.quick else cost_model(model_name, sizes)
    path = common.write_json("batching", {"args": vars(args), "rows": rows, "cost_model": costs}, args.out)
    print(f"\nwrote {path}\n")
    print(f"{args.limit} questions, max_new_tokens {args.max_new_tokens}, {args.repeats} repeats, "
          f"{common.machine_info()['torch_threads']} thread(s); speedup = median over repeats of "
          f"(batch {base} time / this time)")
    print(common.table(rows, [("batch", "batch", ""), ("questions_per_s", "q/s", ".2f"),
                              ("median_s", "wall s", ".2f"), ("min_s", "min s", ".2f"),
                              ("speedup", f"x batch {base}", ".2f"), ("padding_share", "pad tokens", ".1%"),
                              ("decode_use", "decode use", ".1%"),
                              ("target", "target", ""), ("verdict", "verdict", "")]))
    if costs:
        print("\ncost model: generate with 1 and with 17 new tokens (min_new_tokens forces the length); "
              "decode step = (t17 - t1) / 16; per question = / batch")
        print(common.table(costs, [("batch", "batch", "d"), ("prompt_width", "prompt tokens", "d"),
                                   ("prefill_s", "prefill s", ".3f"), ("prefill_per_q_s", "prefill/q s", ".3f"),
                                   ("step_s", "decode step s", ".4f"), ("step_per_q_s", "step/q s", ".4f")]))


def cost_model(model_name, sizes, repeats=3):
    """Prefill and per-step decode time at each batch size (min of repeats), the first questions."""
    from activation_eval.capture.generation import encode_prompts
    from activation_eval.models import load_model
    model, tokenizer = load_model(model_name)
    out = []
    for b in sizes:
        enc = encode_prompts(tokenizer, common.prompts(b))
        times = {}
        for n in (1, 17):
            kw = dict(max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=tokenizer.pad_token_id)
            times[n] = min(common.time_call(lambda: model.generate(**enc, **kw))[0] for _ in range(repeats))
        step = (times[17] - times[1]) / 16
        out.append({"batch": b, "prompt_width": enc["input_ids"].shape[1], "prefill_s": times[1],
                    "prefill_per_q_s": times[1] / b, "step_s": step, "step_per_q_s": step / b})
    return out


def _padding_share(batches, tokenizer, chat_template):
    """Share of prompt token slots that are left padding, over all batches."""
    from activation_eval.capture.generation import prompt_lengths
    from activation_eval.eval.benchmark import format_question
    slots = real = 0
    for batch in batches:
        lengths = prompt_lengths(tokenizer, [format_question(r) for r in batch], chat_template)
        slots += max(lengths) * len(lengths)
        real += sum(lengths)
    return 1 - real / slots if slots else 0.0


if __name__ == "__main__":
    sys.exit(main())
