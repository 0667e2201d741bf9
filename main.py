"""Evaluate a causal LM on a question benchmark; optionally save every question's activations.

    python main.py                                   # default model, built-in benchmark
    python main.py --limit 20 --capture_activations --layers embeddings,0,-1,final_norm
    torchrun --nproc_per_node 4 main.py --capture_activations

A thin entry point: the command line lives in activation_eval/run/cli.py (also installed as the
`activation-eval` console script). `python main.py --help` lists every flag.
"""
from activation_eval.run.cli import build_parser, main  # noqa: F401

if __name__ == "__main__":
    from activation_eval.run.distributed import exit_process
    exit_process(main())
