"""Evaluate a causal LM on a question benchmark; optionally save every question's activations.

The command line of `python main.py` and the `activation-eval` console script (same flags):

    python main.py                                   # default model, built-in benchmark
    python main.py --limit 20 --capture_activations --layers embeddings,0,-1,final_norm
    python main.py --model path/to/model --benchmark my.csv --question_field q --answer_field a

    torchrun --nproc_per_node 4 main.py --capture_activations       # 4 processes share the questions

Public names: build_parser(prog), main(argv=None) -> exit code, console_main(), activation_overview(dir, run_dir).
Flags become a RunConfig in config.config_from_args (dest = field name).
Bad input prints one line `error: ...` and exits with code 2 (--debug shows the traceback). A closed
stdout (`| head`) ends quietly. With
several processes, one that fails makes the others stop with one line each and exit code 1.
"""
import argparse
import logging
import os
import sys

from ..store import run_folder
from ..store.run_reader import load_activations
from . import distributed
from .config import DEFAULT_SHARD_MB, config_from_args

log = logging.getLogger(__name__)

EPILOG = """examples:
  python main.py --limit 20
  python main.py --capture_activations --positions last_prompt --activation_format safetensors
  python main.py --model HuggingFaceTB/SmolLM2-360M-Instruct --batch_size 16 --dtype bfloat16
  python main.py --output_dir results/run1 --resume
  python main.py --limit 0.1 --shuffle --temperature 0.7 --top_p 0.95 --num_samples 4 --seed 1
  python main.py --mc_scoring loglikelihood --capture_activations --positions last_prompt
  torchrun --nproc_per_node 4 main.py --output_dir results/run2      # or: accelerate launch --num_processes 4
  python main.py --model big/model --device_map auto --max_memory 0=70GiB,1=70GiB,cpu=200GiB
  python main.py --benchmark hf:cais/mmlu --subset all --split test --num_fewshot 5 --fewshot_split dev
  python main.py --benchmark freshqa.csv --skip_rows 2 --answer_field 'answer_*' --category_field fact_type
"""


def build_parser(prog="main.py"):
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0], epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    m = p.add_argument_group("model")
    m.add_argument("--model", metavar="NAME_OR_PATH", default=None,
                   help="hub id, local model folder or .gguf file (default: SmolLM2-135M-Instruct, offline)")
    m.add_argument("--device", default="auto", metavar="DEV", help="auto, cpu, cuda, cuda:N or mps (default: auto)")
    m.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                   help="model dtype (default: auto = float32 on CPU, the checkpoint's elsewhere)")
    m.add_argument("--device_map", default=None, metavar="MAP",
                   help="passed to from_pretrained: auto spreads a model too large for one GPU over the GPUs "
                        "(and CPU); with several processes on a node, each spreads over its own share of the GPUs")
    m.add_argument("--max_memory", default=None, metavar="LIST",
                   help="with --device_map: memory per device, e.g. 0=20GiB,1=20GiB,cpu=60GiB (with several "
                        "processes on a node, GPU numbers count within each process's share)")
    m.add_argument("--chat_template", default="auto", choices=["auto", "on", "off"],
                   help="wrap prompts in the tokenizer's chat template (default: auto = when it has one)")

    b = p.add_argument_group("benchmark")
    b.add_argument("--benchmark", metavar="PATH", default=None,
                   help="JSONL, JSON, CSV, TSV or parquet file, a folder saved with datasets' save_to_disk, or "
                        "hf:NAME for datasets.load_dataset (default: the built-in data/benchmark.jsonl)")
    b.add_argument("--subset", default=None, metavar="NAME", help="hf:NAME's configuration, e.g. all for cais/mmlu")
    b.add_argument("--split", default=None, metavar="NAME",
                   help="split of hf:NAME or a datasets folder (needed when it has several), e.g. test")
    b.add_argument("--skip_rows", type=int, default=None, metavar="N", help="CSV/TSV: lines before the header row")
    b.add_argument("--question_field", default=None, metavar="NAME", help="(default: question)")
    b.add_argument("--answer_field", default=None, metavar="NAMES",
                   help="the gold answer column; several (accepted aliases, empty cells ignored) as a comma "
                        "list or a glob such as 'answer_*' (default: answer)")
    b.add_argument("--choices_field", default=None, metavar="NAME",
                   help="a list of choices, or ARC's {label, text} (default: choices)")
    b.add_argument("--id_field", default=None, metavar="NAME",
                   help="(default: id; rows without one get q- + a hash of the question)")
    b.add_argument("--category_field", default=None, metavar="NAME",
                   help="accuracy is also reported per category (default: category)")
    b.add_argument("--strict", action="store_true", default=None,
                   help="a row the grader cannot use is an error (default: skipped with a warning, counted)")
    b.add_argument("--limit", default=None, metavar="N",
                   help="only N questions (an integer), or a fraction of them (e.g. 0.1 = 10%%, rounded up); "
                        "the first ones unless --shuffle")
    b.add_argument("--shuffle", action="store_true", default=None,
                   help="with --limit: a random subset (seeded by --seed, kept in benchmark order), so it "
                        "spans the benchmark's categories")

    q = p.add_argument_group("prompt")
    q.add_argument("--system_prompt", default=None, metavar="TEXT",
                   help="system message of the chat template (without a template: prepended to each prompt)")
    q.add_argument("--prompt_template", default=None, metavar="FORMAT",
                   help="format string with {question} and {choices} (the lettered choices), e.g. "
                        "'Question: {question}\n{choices}\nAnswer:' (default: the question and a one-line instruction)")
    q.add_argument("--num_fewshot", type=int, default=None, metavar="K",
                   help="K solved examples before each question, never the question itself (default: 0)")
    q.add_argument("--fewshot_split", default=None, metavar="NAME",
                   help="draw the examples from this split of --benchmark (default: the other questions)")
    q.add_argument("--fewshot_file", default=None, metavar="PATH",
                   help="draw the examples from this benchmark file (same field names)")
    q.add_argument("--fewshot_seed", type=int, default=None, metavar="N",
                   help="seed of the example draw, fixed per question (default: 1234, as lm-evaluation-harness)")

    g = p.add_argument_group("generation")
    g.add_argument("--batch_size", type=int, default=8, metavar="N",
                   help="prompts decoded at once (default: 8); with greedy decoding a finished answer's row "
                        "is refilled with the next question at once (continuous batching)")
    g.add_argument("--no_continuous_batching", dest="continuous_batching", action="store_false",
                   help="answer fixed batches with model.generate instead (rows that finished keep decoding)")
    g.add_argument("--max_new_tokens", type=int, default=32, metavar="N", help="(default: 32)")

    s = p.add_argument_group("decoding and scoring")
    s.add_argument("--temperature", type=float, default=None, metavar="T",
                   help="0 = greedy (default); > 0 samples, each answer from its own stream seeded by "
                        "(--seed, question id, sample), so answers do not depend on batching or --resume")
    s.add_argument("--top_p", type=float, default=None, metavar="P", help="nucleus sampling (default: 1.0 = off)")
    s.add_argument("--top_k", type=int, default=None, metavar="K", help="top-k sampling (default: 0 = off)")
    s.add_argument("--seed", type=int, default=0, metavar="N", help="seeds sampling and --shuffle (default: 0)")
    s.add_argument("--num_samples", type=int, default=None, metavar="N",
                   help="answers per question, each its own results row (with `sample`) and record "
                        "(default: 1; needs --temperature > 0)")
    s.add_argument("--mc_scoring", default=None, choices=["generate", "loglikelihood"],
                   help="multiple-choice rows: generate an answer and read its letter (default), or score "
                        "each choice's log-likelihood as a continuation of the prompt (lm-eval's "
                        "multiple_choice: acc and acc_norm, no generation; rows without choices are skipped)")

    o = p.add_argument_group("output")
    o.add_argument("--output_dir", default=None, metavar="DIR", help="run folder (default: results/<timestamp>)")
    o.add_argument("--resume", action="store_true", help="continue the run in --output_dir, skipping answered questions")

    c = p.add_argument_group("activation capture")
    c.add_argument("--capture_activations", action="store_true", help="save each question's per-layer activations")
    c.add_argument("--activation_save_dir", default=None, metavar="DIR",
                   help="where the record files go (default: <output_dir>/activations). A folder elsewhere, e.g. "
                        "on scratch storage, is reached through <output_dir>/activations (made a symlink to it) "
                        "and belongs to this one run: another run folder using it is refused, so give each run "
                        "its own")
    c.add_argument("--layers", default=None, metavar="LIST",
                   help="comma-separated names, indices or module paths, e.g. embeddings,0,5,-1,final_norm "
                        "(default: embeddings and every decoder layer)")
    c.add_argument("--positions", default="all", metavar="MODE",
                   help="all, prompt, generated, last_prompt, or token indices like 0,5,-1 (default: all)")
    c.add_argument("--activation_dtype", default=None, choices=["float32", "bfloat16", "float16"],
                   help="(default: the model's dtype)")
    c.add_argument("--activation_format", default="pkl", choices=["pkl", "safetensors"],
                   help="format of the per-question files (default: pkl)")
    c.add_argument("--activation_store", default="files", choices=["files", "shards"],
                   help="files: one record file per question (default); shards: one .safetensors file per group "
                        "of units of questions (--shard_size_mb), each layer contiguous (fast to write and to read "
                        "one layer across 100k questions; read with load_activations(run_dir, question_id) or load_run_layer)")
    c.add_argument("--shard_size_mb", type=float, default=DEFAULT_SHARD_MB, metavar="MB",
                   help="shards: finished units of questions are held in memory until their activations reach "
                        "this size, then written as one shard and their rows appended (also after 10 minutes); "
                        "a crash loses the held units, which --resume answers again. 0: one unit per shard "
                        f"(default: {DEFAULT_SHARD_MB:g})")

    d = p.add_argument_group("several processes (torchrun / accelerate launch)")
    d.add_argument("--dist_timeout", type=float, default=distributed.DEFAULT_TIMEOUT_MIN, metavar="MIN",
                   help="minutes a process waits for the others, e.g. at the end for the slowest "
                        f"(default: {distributed.DEFAULT_TIMEOUT_MIN:g})")

    p.add_argument("--debug", action="store_true", help="show full tracebacks")
    p.add_argument("--quiet", action="store_true", help="only warnings and the summary")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    is_main = distributed.is_main_process()        # only the main process logs and prints the summary
    logging.basicConfig(level=logging.WARNING if args.quiet or not is_main else logging.INFO,
                        format="%(levelname)s %(message)s")
    if not is_main:
        from transformers.utils import logging as hf_logging
        hf_logging.disable_progress_bar()          # one "Loading weights" bar, not one per process
    restore_sigterm = distributed.install_stop_handler()
    try:
        from .runner import format_summary, run_benchmark
        config = config_from_args(args)
        summary = run_benchmark(config)
    except KeyboardInterrupt:
        print("interrupted: rows written so far are kept; continue with --resume", file=sys.stderr)
        return 130
    except distributed.MainProcessError:
        return 2                                   # the main process printed the error
    except distributed.DistributedError as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (ValueError, OSError) as exc:  # every input error of the project is a ValueError or OSError
        if args.debug:
            raise
        print(f"error: {distributed.process_label() if not is_main else ''}{exc}", file=sys.stderr)
        return 2
    finally:
        restore_sigterm()
    if not is_main:
        return 0
    try:
        print(format_summary(summary))
        if config.capture_activations:
            print(activation_overview(config.activation_save_dir, config.output_dir))
        sys.stdout.flush()
    except BrokenPipeError:                        # `main.py ... | head`: the reader left; the run is saved
        _silence_stdout()
    return 0


def _silence_stdout():
    """Point stdout at /dev/null so that the interpreter's last flush cannot raise again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def activation_overview(directory, run_dir):
    """Where the records are, and what one of them holds."""
    files = run_folder.iter_record_files(directory)
    units = os.path.join(directory, run_folder.UNITS_DIR)
    shards = sorted(os.path.join(units, n) for n in os.listdir(units)
                    if n.endswith(".safetensors")) if os.path.isdir(units) else []
    if not files and not shards:
        return f"activations  none saved in {directory}"
    size = sum(os.path.getsize(f) for f in files + shards)
    if files:
        what, record = f"{len(files)} files", load_activations(files[0])
    else:
        shard_key = run_folder.SHARD_FIELDS[0]
        first_id = next(row["id"] for row in run_folder.read_results(run_dir) if row.get(shard_key))
        what, record = (f"{len(shards)} shard{'s' if len(shards) != 1 else ''} (units of questions, up to ~--shard_size_mb each)",
                        load_activations(run_dir, question_id=first_id))
    acts = record["activations"]
    first = next(iter(acts.values()))
    return (f"activations  {what}, {size / 2**20:.1f} MiB in {directory}\n"
            f"             each: {len(acts)} layers ({', '.join(list(acts)[:3])}{', ...' if len(acts) > 3 else ''}), "
            f"positions {record.get('positions', 'all')}, e.g. {tuple(first.shape)} {record.get('dtype', first.dtype)}\n"
            f"             analyse: python analyze_activations.py --probe {run_dir}")


def console_main():
    """The `activation-eval` console script."""
    distributed.exit_process(main())
