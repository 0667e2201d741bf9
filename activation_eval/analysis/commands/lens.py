"""--logit_lens RUN_DIR: each layer's prediction of the answer's first token (lens.logit_lens_run -> LensResult).

Loads the run's model when it is local, else the one given with --model (never a download). Text:
lens/text.py; plot (always written to --output_dir): lens/plots.py.

Public names:
    COMMAND

Example:
    $ python analyze_activations.py --logit_lens results/run1 --stratify_by grader --json
    $ python analyze_activations.py --logit_lens results/run1 --lens_position last_prompt   # the old reading
"""
import argparse

from ..lens import logit_lens_run
from ..lens.plots import plot_logit_lens
from ..lens.reading import READINGS
from ..lens.text import lens_text
from .base import Command, Groups, Options, Outcome, plot_path, source_name


class LensCommand(Command):
    name = "logit_lens"
    loads_model = True

    def add_mode(self, group: argparse._MutuallyExclusiveGroup) -> None:
        group.add_argument("--logit_lens", metavar="RUN_DIR",
                           help="a run folder: each layer's prediction of the answer's first token (loads the run's "
                                "model when it is local, else pass --model)")

    def add_options(self, groups: Groups) -> None:
        lens = groups["parser"].add_argument_group("logit lens (--logit_lens, --report)")
        lens.add_argument("--lens_position", choices=READINGS, default="auto",
                          help="where the lens reads: answer = the position that emits the extracted answer's first "
                               "token (questions without an answer span are left out and counted); last_prompt = the "
                               "last prompt token (the old reading); auto (default) = answer when the run's rows hold "
                               "answer_positions, else last_prompt")
        lens.add_argument("--model", metavar="PATH",
                          help="the run's model as a local folder or .gguf file (default: the run's model when it is "
                               "local or the offline default; the analysis never downloads)")

    def output_folders(self, args: argparse.Namespace) -> list[tuple[str, str]]:
        return [(args.output_dir, "--output_dir")]

    def run(self, args: argparse.Namespace, options: Options) -> Outcome:
        result = logit_lens_run(args.logit_lens, options.layers, model=args.model, progress=options.progress,
                                stratify_by=options.stratify_by, position=args.lens_position)
        path = plot_path(args, options, "logit_lens", f"{source_name(args.logit_lens)}_logit_lens")
        return Outcome(result, lens_text(result), [plot_logit_lens(result, path)])


COMMAND = LensCommand()
