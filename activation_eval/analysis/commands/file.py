"""--file F: one record's metadata and per-layer statistics (stats.describe_record -> FileResult).

With --plot: the per-layer norm quartiles, the value histograms and the layers x positions heatmap
(token strings on its axis with --tokenizer).

Public names:
    COMMAND                  the command
    file_text(result) -> str the text output

Example:
    >>> from activation_eval.analysis.stats import analyze_file
    >>> print(file_text(analyze_file("results/run1/activations/geo-001.safetensors", ["layer_3"])).splitlines()[6])
    layers:     1
"""
import argparse

from ...schema.stats import FileResult
from ..arrays import load_record
from ..plots import plot_histograms, plot_layer_norms, plot_position_heatmap
from ..stats import STAT_KEYS, describe_record
from ..text import format_table, shorten
from .base import Command, Groups, Options, Outcome, plot_path, source_name


def file_text(result: FileResult) -> str:
    head = [f"file:       {result.file}", f"model:      {result.model}",
            f"prompt:     {shorten(result.prompt)}", f"response:   {shorten(result.response)}",
            f"tokens:     {result.num_prompt_tokens} prompt, {result.num_generated_tokens} generated, "
            f"{result.num_positions} positions kept",
            f"dtype:      {result.dtype}", f"layers:     {len(result.layers)}"]
    if result.grading:
        g = result.grading        # the record's own grading entry (free-form, as the record holds it)
        head.append(f"grading:    correct={g.get('correct')} answer={g.get('answer')!r} extracted={g.get('extracted')!r}")
    rows = [[name, s.shape, s.mean, s.std, s.min, s.max, s.position_norm_mean, s.position_norm_std, s.l2_norm]
            for name, s in result.layers.items()]
    return "\n".join(head) + "\n\n" + format_table(["layer", "shape", *STAT_KEYS], rows)


class FileCommand(Command):
    name = "file"

    def add_mode(self, group: argparse._MutuallyExclusiveGroup) -> None:
        group.add_argument("--file", metavar="F", help="one record (.pkl or .safetensors): metadata + per-layer stats")

    def add_options(self, groups: Groups) -> None:
        groups["output"].add_argument("--tokenizer", metavar="PATH",
                                      help="tokenizer (name or folder) to show token strings on heatmap axes; "
                                           "default token ids")

    def run(self, args: argparse.Namespace, options: Options) -> Outcome:
        record = load_record(args.file, options.layers)
        result = describe_record(record, args.file)
        plots = []
        if args.plot:
            stem = source_name(args.file)
            tokenizer = None
            if args.tokenizer:
                from transformers import AutoTokenizer
                tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
            plots = [plot_layer_norms(result.layers, plot_path(args, options, "norms", f"{stem}_norms"),
                                      f"Per-position L2 norm by layer - {stem}"),
                     plot_histograms(record, plot_path(args, options, "histograms", f"{stem}_histograms"),
                                     title=f"Activation values per layer - {stem} ({record.get('model') or 'record'})"),
                     plot_position_heatmap(record, plot_path(args, options, "heatmap", f"{stem}_heatmap"), tokenizer)]
        return Outcome(result, file_text(result), plots)


COMMAND = FileCommand()
