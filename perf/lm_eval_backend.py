"""The lm-eval backend's time against lm-eval's own `hf` backend on the same local tasks, with
capture off and on, as ratios.

    PYTHONPATH=. .venv/bin/python perf/lm_eval_backend.py                    # default model, 5 repeats
    PYTHONPATH=. .venv/bin/python perf/lm_eval_backend.py --quick            # tiny random model, 2 repeats

Two local tasks in YAML (dataset_path: json, files in a temporary folder; nothing from a hub), as in
tests/harness/test_lm_eval_backend.py: a multiple_choice task (--mc documents, 4 choices each: 4
log-likelihood requests per document) and a generate_until task (--gen documents, greedy, up to
--max_gen_toks tokens). Each variant is one lm_eval.simple_evaluate over both tasks with a model
object built once before timing (so no variant pays for loading), batch size --batch_size, fp32:
    hf           lm-eval's HFLM (the reference)
    ae_off       activation-eval, capture_activations=false: HFLM's calls plus the run folder's rows
    ae_files     activation-eval, capture of every layer (embeddings + each decoder layer) at its
                 default positions (log-likelihood: the context's last token and the continuation;
                 generation: every position), records in the file store (.pkl)
    ae_shards    the same, records in the shard store
The activation-eval variants are timed through activation_eval.harness.simple_evaluate, so their
time includes writing the run folder (a fresh folder per repeat, removed after). Ratios are against
hf in the same repeat (perf/common.py: paired medians, wall and this process's CPU time).
Writes perf/out/lm_eval_backend.json; prints the table last.
"""
import json
import os
import shutil
import sys
import tempfile

import common

MC_YAML = """task: perf_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {folder}/mc.jsonl
test_split: test
output_type: multiple_choice
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_target: label
doc_to_choice: choices
metric_list:
  - metric: acc
  - metric: acc_norm
"""
GEN_YAML = """task: perf_gen
dataset_path: json
dataset_kwargs:
  data_files:
    test: {folder}/gen.jsonl
test_split: test
output_type: generate_until
doc_to_text: "Q: {{{{question}}}}\\nA:"
doc_to_target: answer
generation_kwargs:
  until: ["\\n\\n"]
  max_gen_toks: {max_gen_toks}
  do_sample: false
metric_list:
  - metric: exact_match
"""


def write_tasks(folder, n_mc, n_gen, max_gen_toks):
    from activation_eval.eval.benchmark import load_benchmark
    rows = load_benchmark()
    mc = [{"question": rows[i % len(rows)]["question"],
           "choices": ["four", "Paris", str(i), "the quick brown fox jumps over the lazy dog"], "label": i % 4}
          for i in range(n_mc)]
    gen = [{"question": rows[i % len(rows)]["question"], "answer": str(rows[i % len(rows)]["answer"])}
           for i in range(n_gen)]
    for name, docs in (("mc", mc), ("gen", gen)):
        with open(os.path.join(folder, f"{name}.jsonl"), "w") as f:
            f.writelines(json.dumps(d) + "\n" for d in docs)
    with open(os.path.join(folder, "mc.yaml"), "w") as f:
        f.write(MC_YAML.format(folder=folder))
    with open(os.path.join(folder, "gen.yaml"), "w") as f:
        f.write(GEN_YAML.format(folder=folder, max_gen_toks=max_gen_toks))


def main():
    p = common.base_parser(__doc__, repeats=5)
    p.add_argument("--mc", type=int, default=24, help="multiple-choice documents (default 24)")
    p.add_argument("--gen", type=int, default=8, help="generation documents (default 8)")
    p.add_argument("--max_gen_toks", type=int, default=32)
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--model", default=None, help="model folder (default: the project's default model, converted)")
    args = p.parse_args()
    if args.quick:
        args.repeats, args.mc, args.gen = min(args.repeats, 2), min(args.mc, 8), min(args.gen, 4)
    common.setup(args.threads)
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    import activation_eval.harness as harness
    from activation_eval.models import default_model_dir
    tmp = tempfile.mkdtemp(prefix="perf-lm-eval-")
    model = args.model
    if model is None and args.quick:
        model = os.path.join(tmp, "tiny")
        _save_tiny(model)
    model = model or default_model_dir()
    write_tasks(tmp, args.mc, args.gen, args.max_gen_toks)
    tasks = ["perf_mc", "perf_gen"]
    manager = TaskManager(include_path=tmp)
    common_args = {"pretrained": model, "dtype": "float32", "batch_size": args.batch_size, "device": "cpu"}
    lms = {"hf": HFLM(**common_args),
           "ae_off": harness.ActivationEvalLM(**common_args, output_dir=os.path.join(tmp, "off"), capture_activations=False),
           "ae_files": harness.ActivationEvalLM(**common_args, output_dir=os.path.join(tmp, "files")),
           "ae_shards": harness.ActivationEvalLM(**common_args, output_dir=os.path.join(tmp, "shards"),
                                                 activation_store="shards")}
    results, counter = {}, [0]

    def run(name):
        lm = lms[name]
        kwargs = {"model": lm, "tasks": tasks, "task_manager": manager, "bootstrap_iters": 0, "verbosity": "ERROR"}
        if name == "hf":
            out = lm_eval.simple_evaluate(**kwargs)
        else:
            counter[0] += 1
            lm.output_dir = os.path.join(tmp, f"{name}-{counter[0]}")
            out = harness.simple_evaluate(**kwargs, log_samples=False)
            shutil.rmtree(lm.output_dir)
        results[name] = out["results"]

    try:
        wall, cpu = common.interleaved({name: (lambda n=name: run(n)) for name in lms}, args.repeats)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for name in lms:
        if results[name] != results["hf"]:
            raise SystemExit(f"{name}: task metrics differ from hf's: {results[name]} vs {results['hf']}")
    rows = []
    for name in wall:
        base = None if name == "hf" else "hf"
        st = common.stats(wall[name], wall[base] if base else None)
        st.update(common.stats(cpu[name], cpu[base] if base else None, prefix="cpu_"))
        rows.append({"variant": name, "vs": base, **st})
    path = common.write_json("lm_eval_backend", {"args": vars(args), "model": model, "rows": rows}, args.out)
    print(f"\nwrote {path}\n")
    print(f"{args.mc} multiple-choice documents ({4 * args.mc} requests) + {args.gen} generation documents "
          f"(max {args.max_gen_toks} tokens), batch {args.batch_size}, {args.repeats} repeats, "
          f"{common.machine_info()['torch_threads']} thread(s), model {os.path.basename(model.rstrip('/'))}")
    print(common.table(rows, [("variant", "variant", ""), ("median_s", "wall s", ".2f"), ("cpu_median_s", "cpu s", ".2f"),
                              ("vs", "vs", ""), ("paired_ratio", "wall ratio", ".3f"),
                              ("cpu_paired_ratio", "cpu ratio", ".3f")]))


def _save_tiny(folder):
    from transformers import AutoTokenizer

    from activation_eval.models import default_model_dir
    tok = AutoTokenizer.from_pretrained(default_model_dir())
    model = common.tiny_llama(tok)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)


if __name__ == "__main__":
    sys.exit(main())
