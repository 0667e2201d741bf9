"""Evaluate a causal LM on a question benchmark; optionally save every question's activations.

The command line of `python main.py` and the `activation-eval` console script (same flags):

    python main.py                                   # default model, built-in benchmark
    python main.py --limit 20 --capture_activations --layers embeddings,0,-1,final_norm
    python main.py --model path/to/model --benchmark my.csv --question_field q --answer_field a

    torchrun --nproc_per_node 4 main.py --capture_activations       # 4 processes share the questions

Public names: build_parser(prog), main(argv=None) -> exit code, console_main(), activation_overview(dir, run_dir).
Flags become a RunConfig in config.config_from_args (dest = field name).
Bad input prints one line `error: ...` and exits with code 2 (--debug shows the traceback). With
several processes, one that fails makes the others stop with one line each and exit code 1.
"""
import argparse
import logging
import os
import sys

from ..store import run_folder
from ..store.records import load_activations
from . import distributed
from .config import config_from_args

log = logging.getLogger(__name__)

EPILOG = """examples:
  python main.py --limit 20
  python main.py --capture_activations --positions last_prompt --activation_format safetensors
  python main.py --model HuggingFaceTB/SmolLM2-360M-Instruct --batch_size 16 --dtype bfloat16
  python main.py --output_dir results/run1 --resume
  torchrun --nproc_per_node 4 main.py --output_dir results/run2      # or: accelerate launch --num_processes 4
  python main.py --model big/model --device_map auto --max_memory 0=70GiB,1=70GiB,cpu=200GiB
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
                   help="JSONL, JSON or CSV file (default: the built-in data/benchmark.jsonl)")
    b.add_argument("--question_field", default="question", metavar="NAME")
    b.add_argument("--answer_field", default="answer", metavar="NAME")
    b.add_argument("--choices_field", default="choices", metavar="NAME")
    b.add_argument("--id_field", default="id", metavar="NAME")
    b.add_argument("--limit", type=int, default=None, metavar="N", help="only the first N questions")

    g = p.add_argument_group("generation")
    g.add_argument("--batch_size", type=int, default=8, metavar="N",
                   help="prompts decoded at once (default: 8); with greedy decoding a finished answer's row "
                        "is refilled with the next question at once (continuous batching)")
    g.add_argument("--no_continuous_batching", dest="continuous_batching", action="store_false",
                   help="answer fixed batches with model.generate instead (rows that finished keep decoding)")
    g.add_argument("--max_new_tokens", type=int, default=32, metavar="N", help="(default: 32)")
    g.add_argument("--seed", type=int, default=0, metavar="N")

    o = p.add_argument_group("output")
    o.add_argument("--output_dir", default=None, metavar="DIR", help="run folder (default: results/<timestamp>)")
    o.add_argument("--resume", action="store_true", help="continue the run in --output_dir, skipping answered questions")

    c = p.add_argument_group("activation capture")
    c.add_argument("--capture_activations", action="store_true", help="save each question's per-layer activations")
    c.add_argument("--activation_save_dir", default=None, metavar="DIR", help="(default: <output_dir>/activations)")
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
                   help="files: one record file per question (default); shards: one .safetensors file per unit "
                        "of questions, each layer contiguous (fast to write and to read one layer across "
                        "100k questions; read with load_activations(run_dir, question_id) or load_run_layer)")

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
    print(format_summary(summary))
    if config.capture_activations:
        print(activation_overview(config.activation_save_dir, config.output_dir))
    return 0


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
        what, record = (f"{len(shards)} shards (one per unit of questions)",
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
