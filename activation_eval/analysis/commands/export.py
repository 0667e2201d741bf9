"""--export_hf RUN_DIR OUT_DIR: a run as a Hugging Face datasets folder (export_hf.export_hf -> ExportResult).

Public names:
    COMMAND
    export_text(result) -> str

Example:
    >>> from activation_eval.analysis.export_hf import export_hf
    >>> print(export_text(export_hf("results/mc", "exports/mc", layers=["layer_5"])))
    exported 12 questions (id, correct, category, layer_5; reduce=last_prompt) to exports/mc
    load: datasets.load_from_disk('exports/mc')
"""
import argparse

from ...schema.names import parse_reduce
from ...schema.outputs import ExportResult
from ..export_hf import export_hf
from .base import Command, Options, Outcome


def export_text(result: ExportResult) -> str:
    return (f"exported {result.rows} questions ({', '.join(result.columns)}; reduce={result.reduce}) "
            f"to {result.path}\nload: datasets.load_from_disk({result.path!r})")


class ExportCommand(Command):
    name = "export_hf"

    def add_mode(self, group: argparse._MutuallyExclusiveGroup) -> None:
        group.add_argument("--export_hf", nargs=2, metavar=("RUN_DIR", "OUT_DIR"),
                           help="a run folder -> a Hugging Face datasets folder (datasets.load_from_disk): id, "
                                "correct, category and one column per layer (--layers, default all), reduced by "
                                "--reduce")

    def output_folders(self, args: argparse.Namespace) -> list[tuple[str, str]]:
        return [(args.export_hf[1], "--export_hf's OUT_DIR")]

    def run(self, args: argparse.Namespace, options: Options) -> Outcome:
        run_dir, out_dir = args.export_hf
        result = export_hf(run_dir, out_dir, layers=options.layers, reduce=parse_reduce(args.reduce))
        return Outcome(result, export_text(result))


COMMAND = ExportCommand()
