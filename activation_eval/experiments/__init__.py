"""Experiments that answer a run's questions again under interventions and analyse the answers: the room
between `run` (which answers) and `analysis` (which reads saved runs and never runs a model).

Modules:
    causal_check   causal_run(run_dir, ...) -> CausalResult, choose_layer: the chain of --causal
    causal_runs    Part, Condition, rerun_settings, run_condition: each condition a kept run folder
    command        CausalCommand (--causal), registered with the analysis command line on import

Public names:
    causal_run, main(argv=None, prog="analyze_activations.py") -> exit code, console_main()
        the analysis command line with --causal (`activation-eval-analyze`, analyze_activations.py)

Example:
    >>> from activation_eval.experiments import causal_run
    >>> result = causal_run("results/run1", n_random=20)          # doctest: +SKIP
    >>> result.verdict                                             # doctest: +SKIP
    'no causal evidence at this layer'
"""
import sys

from ..analysis import cli
from ..analysis.commands import register
from .causal_check import causal_run
from .command import COMMAND

__all__ = ["causal_run", "main", "console_main"]

register(COMMAND)


def main(argv=None, prog="analyze_activations.py"):
    """The analysis command line, --causal included (analysis.cli.main)."""
    return cli.main(argv, prog)


def console_main():
    """The `activation-eval-analyze` console script."""
    sys.exit(main(prog="activation-eval-analyze"))
