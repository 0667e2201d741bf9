"""Peak memory of each producer against the number of documents: 1x and 4x, capture on.

    .venv/bin/python perf/producer_memory.py --docs 80        # 80 and 320 documents, every producer
    .venv/bin/python perf/producer_memory.py --docs 25 --producers lm-eval

Target (issue 26): each producer's peak RSS at 4x the documents within +15% of its peak at 1x, i.e.
nothing a producer holds grows with the run: main.py writes each question's record and row as it
finishes; the lm-eval backend keeps each batch's activations on disk (the run folder's staging)
until lm-eval has scored the documents, then writes one record at a time; the Inspect provider
writes each sample as Inspect scores it.

Every run is its own process (the peak RSS is the process's ru_maxrss), on the same random Llama
saved once (the default model's tokenizer, hidden size 768, 6 layers: records of ~0.9 MB per
document at --positions all, so that holding them would show), greedy, 16 new tokens, batch 8,
every layer captured into the file store. main.py answers the built-in benchmark's questions
(repeated with new ids), lm-eval a local generate_until task of the same questions, Inspect a
MemoryDataset of them. Writes perf/out/producer_memory.json; prints the table last.
"""
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time

import common

PRODUCERS = ("main", "lm-eval", "inspect")
TARGET = 1.15
MAX_NEW_TOKENS = 16
BATCH = 8


def build_model(folder):
    """A random Llama (hidden 768, 6 layers) on the default model's tokenizer, saved as a model folder."""
    common.setup()
    from activation_eval.models import DEFAULT_MODEL, load_model
    _, tokenizer = load_model(DEFAULT_MODEL)
    model = common.tiny_llama(tokenizer, hidden=768, layers=6)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def questions(n):
    return [{"id": f"q{i:05d}", "question": q, "answer": "never said"} for i, q in enumerate(common.prompts(n))]


def run_main(model, n, work):
    bench = os.path.join(work, "bench.jsonl")
    with open(bench, "w") as f:
        f.writelines(json.dumps({**row, "category": "memory"}) + "\n" for row in questions(n))
    from activation_eval.run import cli
    code = cli.main(["--model", model, "--benchmark", bench, "--output_dir", os.path.join(work, "run"),
                     "--capture_activations", "--max_new_tokens", str(MAX_NEW_TOKENS), "--batch_size", str(BATCH),
                     "--chat_template", "off", "--prompt_template", "{question}", "--dtype", "float32", "--quiet"])
    assert code == 0, code


def run_lm_eval(model, n, work):
    tasks = os.path.join(work, "tasks")
    os.makedirs(tasks)
    with open(os.path.join(tasks, "qa.jsonl"), "w") as f:
        f.writelines(json.dumps(row) + "\n" for row in questions(n))
    with open(os.path.join(tasks, "qa.yaml"), "w") as f:
        f.write(textwrap.dedent(f"""\
            task: memory_qa
            dataset_path: json
            dataset_kwargs:
              data_files:
                test: {tasks}/qa.jsonl
            test_split: test
            output_type: generate_until
            doc_to_text: "{{{{question}}}}"
            doc_to_target: answer
            generation_kwargs:
              max_gen_toks: {MAX_NEW_TOKENS}
              do_sample: false
            metric_list:
              - metric: exact_match
            """))
    from lm_eval.tasks import TaskManager

    import activation_eval.harness as harness
    harness.simple_evaluate(model="activation-eval", tasks=["memory_qa"], batch_size=BATCH, device="cpu",
                            task_manager=TaskManager(include_path=tasks, include_defaults=False),
                            model_args={"pretrained": model, "dtype": "float32", "output_dir": os.path.join(work, "run")})


def run_inspect(model, n, work):
    from inspect_ai import Task, eval
    from inspect_ai.dataset import MemoryDataset, Sample
    from inspect_ai.scorer import match
    from inspect_ai.solver import generate
    task = Task(dataset=MemoryDataset([Sample(input=row["question"], target=row["answer"], id=row["id"])
                                       for row in questions(n)]), solver=generate(), scorer=match(), name="memory_qa")
    logs = eval(task, model=f"activation-eval/{model}", display="none", log_dir=os.path.join(work, "logs"),
                max_tokens=MAX_NEW_TOKENS, model_args={"output_dir": os.path.join(work, "run"), "dtype": "float32",
                                                       "device": "cpu", "batch_size": BATCH, "use_chat_template": "off"})
    assert logs[0].status == "success", logs[0].error


def child(producer, model, n, work):
    """Run one producer in this process; print its peak RSS and the records it wrote."""
    import resource
    common.setup()
    start = time.perf_counter()
    {"main": run_main, "lm-eval": run_lm_eval, "inspect": run_inspect}[producer](model, n, work)
    elapsed = time.perf_counter() - start
    acts = os.path.join(work, "run", "activations")
    size = sum(os.path.getsize(os.path.join(acts, f)) for f in os.listdir(acts))
    print(json.dumps({"peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "records_mib": size / 2**20, "records": len(os.listdir(acts)), "seconds": elapsed}))


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _, _, producer, model, n, work = sys.argv
        child(producer, model, int(n), work)
        return
    p = common.base_parser(__doc__, repeats=1)
    p.add_argument("--docs", type=int, default=40, help="documents at 1x (default 40; 4x is 4 times that)")
    p.add_argument("--producers", default=",".join(PRODUCERS))
    args = p.parse_args()
    tmp = tempfile.mkdtemp(prefix="producer_memory_")
    model = os.path.join(tmp, "model")
    build_model(model)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(args.threads or 1), "TQDM_DISABLE": "1"}
    results = []
    for producer in args.producers.split(","):
        peaks = {}
        for factor in (1, 4):
            work = os.path.join(tmp, f"{producer}-{factor}")
            os.makedirs(work)
            done = subprocess.run([sys.executable, __file__, "--child", producer, model, str(args.docs * factor), work],
                                  capture_output=True, text=True, env=env)
            if done.returncode:
                sys.exit(f"{producer} x{factor} failed:\n{done.stderr[-3000:]}")
            out = json.loads(done.stdout.strip().splitlines()[-1])
            peaks[factor] = out["peak_rss_mib"]
            results.append({"producer": producer, "docs": args.docs * factor, **out})
        ratio = peaks[4] / peaks[1]
        results[-1].update(ratio=ratio, verdict=common.verdict(ratio, TARGET))
        print(f"  {producer}: {peaks[1]:.0f} MiB at {args.docs} documents, {peaks[4]:.0f} MiB at {4 * args.docs}",
              flush=True)
    common.write_json("producer_memory", {"machine": common.machine_info(), "args": vars(args), "results": results})
    print(common.table(results, [("producer", "producer", ""), ("docs", "documents", ""),
                                 ("records", "records", ""), ("records_mib", "records MiB", ".0f"),
                                 ("peak_rss_mib", "peak RSS MiB", ".0f"), ("seconds", "s", ".0f"),
                                 ("ratio", "4x / 1x", ".3f"), ("verdict", f"target <= {TARGET}", "")]))


if __name__ == "__main__":
    main()
