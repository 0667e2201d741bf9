"""--causal RUN_DIR: does the probe's direction change the answers? (causal_check.causal_run -> CausalResult)

An analyze_activations.py mode that lives outside the analysis room (which reads saved runs and never runs a
model): it answers RUN's questions again. Registered with the analysis command line by this package's
__init__. Text: analysis/causal/text.py; the plot of effect against alpha with the random directions' band
(always written to --output_dir): analysis/causal/plots.py. The condition run folders stay under --causal_dir.

Public names:
    COMMAND

Example:
    $ python analyze_activations.py --causal results/run1 --limit 60 --shuffle --causal_alphas=-2,-1,1,2
"""
import argparse

from ..analysis.causal.directions import METHODS
from ..analysis.causal.plots import plot_causal
from ..analysis.causal.text import causal_text
from ..analysis.commands.base import Command, Groups, Options, Outcome, plot_path, source_name
from .causal_check import DEFAULT_ALPHAS, DEFAULT_OUT, DEFAULT_RANDOM, causal_run


class CausalCommand(Command):
    name = "causal"
    loads_model = True

    def add_mode(self, group: argparse._MutuallyExclusiveGroup) -> None:
        group.add_argument("--causal", metavar="RUN_DIR",
                           help="a run folder of main.py: steer and ablate along the probe's direction, answer "
                                "the questions again, and test the effect against random directions")

    def add_options(self, groups: Groups) -> None:
        c = groups["parser"].add_argument_group("causal check (--causal)")
        c.add_argument("--causal_layer", metavar="LAYER",
                       help="the layer to steer (default: the probe's verdict layer, else its best layer)")
        c.add_argument("--causal_method", default="mass_mean", choices=METHODS,
                       help="the direction: mass_mean (correct minus incorrect means, default) or logistic (the "
                            "probe's weights in the residual's units)")
        c.add_argument("--causal_direction", metavar="RUN_OR_FILE",
                       help="take the direction from another run folder (fitted there) or a direction file "
                            "(.safetensors or .npy) instead of cross-fitting it on RUN's questions")
        c.add_argument("--causal_alphas", default=",".join(f"{a:g}" for a in DEFAULT_ALPHAS), metavar="LIST",
                       help="signed steering strengths in spreads of the residual along the direction (default "
                            "%(default)s; write --causal_alphas=-4,-2,2,4: a list starting with a minus needs the =); the "
                            "largest is the test alpha (its negative, the sign flip, is added)")
        c.add_argument("--causal_random", type=int, default=DEFAULT_RANDOM, metavar="K",
                       help="random directions of the test alpha's norm, each run at both signs, half from the "
                            "residual's covariance, half isotropic (default %(default)s: a direction no better than "
                            "them passes with probability <= 1/(K+1))")
        c.add_argument("--causal_folds", type=int, default=5, metavar="K",
                       help="cross-fitting folds: each fold steered by the direction of the others (default 5)")
        c.add_argument("--causal_positions", default="all", choices=("all", "prompt", "generated"),
                       help="where the direction is added or removed (default: all)")
        c.add_argument("--causal_dir", default=DEFAULT_OUT, metavar="DIR",
                       help="where each condition's run folder is kept, to resume and audit (default: ./causal)")
        c.add_argument("--shuffle", action="store_true",
                       help="--causal with --limit N: a seeded random subset of N questions, not the first N")

    def output_folders(self, args: argparse.Namespace) -> list[tuple[str, str]]:
        return [(args.output_dir, "--output_dir"), (args.causal_dir, "--causal_dir")]

    def run(self, args: argparse.Namespace, options: Options) -> Outcome:
        alphas = _alphas(args.causal_alphas)
        if args.causal_random < 0:
            raise ValueError(f"--causal_random must be at least 0, got {args.causal_random}")
        result = causal_run(args.causal, layer=args.causal_layer, method=args.causal_method, alphas=alphas,
                            n_random=args.causal_random, folds=args.causal_folds, seed=args.seed,
                            limit=args.limit, shuffle=args.shuffle, out_dir=args.causal_dir,
                            direction=args.causal_direction, positions=args.causal_positions,
                            layers=options.layers, progress=options.progress)
        plot = plot_causal(result, plot_path(args, options, "causal", f"causal_{_name(args.causal)}"))
        return Outcome(result, causal_text(result), [plot])


def _alphas(text: str) -> list[float]:
    try:
        return [float(a) for a in text.split(",") if a.strip()]
    except ValueError:
        raise ValueError(f"--causal_alphas must be a comma-separated list of numbers, e.g. -4,-2,2,4; got {text!r}") \
            from None


def _name(path: str) -> str:
    return source_name(path)


COMMAND = CausalCommand()
