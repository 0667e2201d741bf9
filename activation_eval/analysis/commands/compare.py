"""--compare F1 F2: two records layer by layer (stats.compare_files -> CompareResult).

Cosine similarity and L2 distance in three alignments: the last prompt token, the mean over the
prompt, and the positions of the token prefix both records share. With --plot: both by layer.

Public names:
    COMMAND                       the command
    compare_text(result) -> str   the text output

Example:
    >>> from activation_eval.analysis.stats import compare_files
    >>> a, b = "runs/r1/activations/geo-001.pkl", "results/run1/activations/geo-001.safetensors"
    >>> print(compare_text(compare_files(a, b, ["layer_3"])).splitlines()[-1])
    layer_3         1          0                1                 0           1            0
"""
import argparse

from ...schema.stats import CompareResult, Similarity
from ..plots import plot_compare
from ..stats import compare_files
from ..text import format_table
from .base import Command, Options, Outcome, plot_path, source_name


def _pair(s: Similarity | None) -> list[float | None]:
    return [None, None] if s is None else [s.cosine, s.l2_distance]


def compare_text(result: CompareResult) -> str:
    rows = [[n, *_pair(v.last_prompt_token), *_pair(v.prompt_mean), *_pair(v.common_prefix)]
            for n, v in result.layers.items()]
    heads = ["layer", "cos_last", "dist_last", "cos_prompt_mean", "dist_prompt_mean", "cos_prefix", "dist_prefix"]
    files = result.files or ["A", "B"]
    return "\n".join([f"A: {files[0]}", f"B: {files[1]}"] + [f"note: {n}" for n in result.notes]
                     + ["", format_table(heads, rows)])


class CompareCommand(Command):
    name = "compare"

    def add_mode(self, group: argparse._MutuallyExclusiveGroup) -> None:
        group.add_argument("--compare", nargs=2, metavar=("F1", "F2"), help="two records: cosine / L2 distance per layer")

    def run(self, args: argparse.Namespace, options: Options) -> Outcome:
        result = compare_files(args.compare[0], args.compare[1], options.layers)
        plots = []
        if args.plot:
            a, b = (source_name(f) for f in args.compare)
            plots.append(plot_compare(result, plot_path(args, options, "compare", f"compare_{a}_vs_{b}")))
        return Outcome(result, compare_text(result), plots)


COMMAND = CompareCommand()
