"""main.py's --steer / --ablate flags made into the run's interventions (capture/intervene.py), once.

Public names:
    interventions_from_settings(config) -> (the `interventions` field as a tuple, the edits to apply)
    entries_for(model, interventions) -> [entry]   checked against the model, layers named canonically
                       ValueError (one line, naming the flag) for a flag without its partners, a
                       missing or unusable direction file, or flags and the field both given

Example:
    >>> import torch
    >>> from activation_eval.run.config import RunConfig
    >>> from activation_eval.store.directions import save_direction
    >>> save_direction("dirs/truth.safetensors", torch.randn(64))
    'dirs/truth.safetensors'
    >>> config = RunConfig(steer="dirs/truth.safetensors", steer_layer="3", steer_alpha=4.0, output_dir="results/s")
    >>> [(i.kind, i.layer, i.alpha, i.positions) for i in config.applied_interventions()]
    [('add', '3', 4.0, 'all')]

The flags are parsed by store/directions.intervention_specs (the one parser, shared with the
harnesses): --ablate applies before --steer (both at once: with the same direction at the same
layer, that sets the component along the direction to alpha: clamping); --intervention_positions
applies to both; a direction's source is its file's absolute path.
"""
from ..capture.intervene import Intervention, Interventions
from ..store.directions import STEERING_ARGS, intervention_specs

_FLAGS = ("steer", "steer_layer", "steer_alpha", "ablate", "ablate_layer")


def interventions_from_settings(config):
    """(config.interventions as a checked tuple, the edits to apply in order: from the flags, or that tuple)."""
    given = [f"--{name}" for name in _FLAGS if getattr(config, name) is not None]
    field = tuple(config.interventions or ())
    for item in field:
        if not isinstance(item, Intervention):
            raise ValueError(f"interventions must be Intervention objects (steer(...), ablate(...)), got "
                             f"{type(item).__name__}")
    if field and given:
        raise ValueError(f"pass interventions in code or {', '.join(given)}, not both")
    if field:
        if config.intervention_positions != "all":
            raise ValueError("--intervention_positions applies to --steer / --ablate: give each Intervention "
                             "its own positions")
        return field, field
    specs = intervention_specs({name: getattr(config, name) for name in STEERING_ARGS})
    return field, tuple(Intervention(**spec) for spec in specs)


def entries_for(model, interventions):
    """The interventions' entries with canonical layer names, checked against `model` (the layer exists,
    the direction's size is the hidden size); ValueError (one line) otherwise."""
    try:
        return Interventions(model, interventions).entries
    except ValueError as exc:
        raise ValueError(f"--steer_layer / --ablate_layer / interventions: {' '.join(str(exc).split())}") from None
