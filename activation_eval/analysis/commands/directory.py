"""--directory D: every record of a folder or run folder, streamed (stats.analyze_directory -> DirectoryResult).

With --plot: the per-layer norm quartiles and, for a run folder, the PCA of one layer (--layer,
default the middle one) coloured by --color_by, one vector per question by --reduce (pca.py).

Public names:
    COMMAND                       the command
    directory_text(result) -> str the text output (at most MAX_LISTED_FILES files listed; --json lists all)
    MAX_LISTED_FILES

Example:
    >>> from activation_eval.analysis.stats import analyze_directory
    >>> print(directory_text(analyze_directory("results/run1", progress=False)).splitlines()[1])
    records:    6 read of 6 found, 0 skipped
"""
import argparse

from ...schema.names import parse_reduce
from ...schema.stats import DirectoryResult
from ..pca import plot_pca
from ..plots import default_layer, plot_layer_norms
from ..stats import analyze_directory
from ..text import format_table
from .base import Command, Groups, Options, Outcome, plot_path, source_name

MAX_LISTED_FILES = 50      # text output: per-file rows shown (JSON lists all)


def directory_text(result: DirectoryResult) -> str:
    layers = [[n, s.files, s.positions, s.mean, s.std, s.min, s.max, s.position_norm_mean, s.position_norm_std]
              for n, s in result.layers.items()]
    files = [[f.file, f.model, f.prompt_tokens, f.generated_tokens, f.positions, f.layers, f.correct]
             for f in result.files[:MAX_LISTED_FILES]]
    out = [f"directory:  {result.directory}" + ("  (run folder)" if result.is_run else ""),
           f"records:    {result.files_read} read of {result.files_found} found, "
           f"{result.skipped} skipped" + (" (unreadable, listed below)" if result.skipped else ""), "",
           format_table(["layer", "files", "positions", "mean", "std", "min", "max", "position_norm_mean",
                         "position_norm_std"], layers), "",
           format_table(["file", "model", "prompt_tokens", "generated_tokens", "positions", "layers", "correct"], files)]
    if len(result.files) > MAX_LISTED_FILES:
        out.append(f"... {len(result.files) - MAX_LISTED_FILES} more files (--json lists all)")
    out += [f"skipped {e.file}: {e.error}" for e in result.errors[:MAX_LISTED_FILES]]
    if len(result.errors) > MAX_LISTED_FILES:
        out.append(f"... {len(result.errors) - MAX_LISTED_FILES} more skipped files (--json lists all)")
    return "\n".join(out)


class DirectoryCommand(Command):
    name = "directory"

    def add_mode(self, group: argparse._MutuallyExclusiveGroup) -> None:
        group.add_argument("--directory", metavar="D", help="a folder of records or a run folder: streamed aggregates")

    def add_options(self, groups: Groups) -> None:
        sel = groups["selection"]
        sel.add_argument("--limit", type=int, metavar="N",
                         help="--directory: read at most N records; --causal: check N questions (the first, or "
                              "--shuffle)")
        sel.add_argument("--layer", metavar="NAME", help="layer for the run-folder PCA plot (default: middle layer)")

    def run(self, args: argparse.Namespace, options: Options) -> Outcome:
        result = analyze_directory(args.directory, args.limit, options.layers, progress=options.progress)
        plots = []
        if args.plot:
            name = source_name(args.directory)
            plots.append(plot_layer_norms(result.layers, plot_path(args, options, "norms", f"{name}_norms"),
                                          f"Per-position L2 norm by layer - {name} ({result.files_read} records)"))
            if result.is_run:
                layer = args.layer or default_layer(list(result.layers))
                plots.append(plot_pca(args.directory, plot_path(args, options, "pca", f"{name}_pca_{layer}"), layer,
                                      color_by=args.color_by, reduce=parse_reduce(args.reduce),
                                      progress=options.progress, stratify_by=options.stratify_by))
        return Outcome(result, directory_text(result), plots)


COMMAND = DirectoryCommand()
