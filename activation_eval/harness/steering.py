"""Interventions in the harness backends: main.py's steer / ablate arguments (parsed by harness/options.py
through store/directions.intervention_specs), checked against the loaded model and a resumed folder.

Public names:
    checked(model, interventions, stored=None) -> capture.intervene.Interventions   layers and sizes
                checked (ValueError naming the argument), and a resumed folder's interventions the same
                (RunFolderError naming the difference)
    scoring(steering, inps=None, starts=None)   the context one log-likelihood forward runs under
    row_starts(inps, starts) -> [int]   each right-padded row's continuation start, matched by its tokens

Example:
    >>> from activation_eval.capture.intervene import steer
    >>> edits = checked(model, [steer([1.0] + [0.0] * 63, "1", 4.0)])
    >>> [(e["layer"], e["alpha"]) for e in edits.entries]
    [('layer_1', 4.0)]

Positions. Generation (lm-eval's generate_until, via model.generate) applies prompt / generated as
main.py does (Interventions.begin(): each hook's first forward is the prompt). A log-likelihood
request is scored by HFLM in one right-padded forward over context and continuation, several
requests per batch (one row for several one-token continuations of a context): each row is matched
to its requests by its tokens, and its columns from the context's length on are "generated" (the
continuation), as main.py's --mc_scoring loglikelihood splits them (capture/loglik.py).
loglikelihood_rolling requests have no context: prompt / generated are refused there.
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
def scoring(steering, inps=None, starts=None):
    """Run one right-padded log-likelihood forward `inps` (B, T) under `steering`; `starts`: {fed tokens:
    context tokens fed} of the requests being scored (None: rolling log-likelihoods, whose windows have no
    context and continuation), which prompt / generated positions need (see the module docstring)."""
    if not steering.interventions:
        yield
        return
    split = [i for i in steering.interventions if i.positions != "all"]
    if split and starts is None:
        raise ValueError(f"intervention_positions={split[0].positions} needs a context and a continuation: "
                         f"loglikelihood_rolling requests have none; use intervention_positions=all")
    with steering:
        if split:
            steering.split(row_starts(inps, starts))
        yield


def row_starts(inps, starts):
    """Each row's context length (its continuation's first column) in a right-padded batch: the row is
    matched to a request by its tokens (lm-eval pads with zeros, so the shortest match from the last
    non-zero token on)."""
    out = []
    for row in inps.tolist():
        end = len(row)
        while end and row[end - 1] == 0:
            end -= 1
        found = next((starts[key] for n in range(end, len(row) + 1) if (key := tuple(row[:n])) in starts), None)
        if found is None:
            raise RuntimeError("a log-likelihood batch row matches no request (intervention positions); please "
                               "report this, and use intervention_positions=all meanwhile")
        out.append(found)
    return out
