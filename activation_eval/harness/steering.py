"""Interventions in the harness backends: main.py's steer / ablate arguments (parsed by harness/options.py
through store/directions.intervention_specs), checked against the loaded model and a resumed folder.

Public names:
    checked(model, interventions, stored=None) -> capture.intervene.Interventions   layers and sizes
                checked (ValueError naming the argument), and a resumed folder's interventions the same
                (RunFolderError naming the difference)
    scoring(steering)   the context one log-likelihood forward runs under: the edits at every position

Example:
    >>> from activation_eval.capture.intervene import steer
    >>> edits = checked(model, [steer([1.0] + [0.0] * 63, "1", 4.0)])
    >>> [(e["layer"], e["alpha"]) for e in edits.entries]
    [('layer_1', 4.0)]

Positions. Generation (lm-eval's generate_until, via model.generate) applies prompt / generated as
main.py does (Interventions.begin(): each hook's first forward is the prompt). A log-likelihood
request is scored by HFLM in one right-padded forward over context and continuation, several
requests per batch and sometimes one row for several requests; this backend does not split that
forward per row, so intervention_positions=prompt or generated is refused for log-likelihood
requests (all applies at every position, as main.py's --mc_scoring loglikelihood does). main.py's
--mc_scoring loglikelihood and --gold_logprob do split them (capture/loglik.py).
"""
import contextlib

from ..capture.intervene import Interventions
from ..schema.interventions import interventions_differ, interventions_of
from ..store.errors import RunFolderError


def checked(model, interventions, stored=None):
    """The Interventions of `model` (not entered); `stored`: the run_config.json of a folder being resumed."""
    try:
        steering = Interventions(model, interventions)
    except ValueError as exc:
        raise ValueError(f"steer_layer / ablate_layer: {' '.join(str(exc).split())}") from None
    if stored is not None:
        differ = interventions_differ(interventions_of(stored), steering.entries)
        if differ:
            raise RunFolderError(f"resume=true: the folder was written under other interventions ({differ}): "
                                 f"steered and unsteered answers must not mix; use the stored steer / ablate "
                                 f"arguments, or another output_dir")
    return steering


@contextlib.contextmanager
def scoring(steering):
    """Run one log-likelihood forward under `steering` (at every position; see the module docstring)."""
    if not steering.interventions:
        yield
        return
    split = [i for i in steering.interventions if i.positions != "all"]
    if split:
        raise ValueError(f"intervention_positions={split[0].positions} applies to generate_until tasks: "
                         f"this backend scores a log-likelihood request's context and continuation in one "
                         f"forward; use intervention_positions=all, or main.py --mc_scoring loglikelihood")
    with steering:
        yield
