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

Order: --ablate applies before --steer (both at once: with the same direction at the same layer,
that sets the component along the direction to alpha: clamping). --intervention_positions applies
to both. A direction's source is its file's absolute path.
"""
import math
import os

from ..capture.intervene import Intervention, Interventions, ablate, steer
from ..store.directions import load_direction

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
    built = [*_ablation(config), *_steering(config)]
    if not built and config.intervention_positions != "all":
        raise ValueError("--intervention_positions needs --steer or --ablate")
    return field, tuple(built)


def _ablation(config):
    if config.ablate is None and config.ablate_layer is None:
        return []
    if config.ablate is None or config.ablate_layer is None:
        raise ValueError("--ablate FILE and --ablate_layer LAYER go together: add "
                         + ("--ablate_layer" if config.ablate_layer is None else "--ablate FILE"))
    return [ablate(_direction("--ablate", config.ablate), config.ablate_layer, config.intervention_positions,
                   source=os.path.abspath(config.ablate))]


def _steering(config):
    values = {"--steer": config.steer, "--steer_layer": config.steer_layer, "--steer_alpha": config.steer_alpha}
    if all(v is None for v in values.values()):
        return []
    missing = [flag for flag, value in values.items() if value is None]
    if missing:
        raise ValueError(f"--steer FILE --steer_layer LAYER --steer_alpha A go together: add {' '.join(missing)}")
    try:
        alpha = float(config.steer_alpha)
    except (TypeError, ValueError):
        raise ValueError(f"--steer_alpha must be a number, got {config.steer_alpha!r}") from None
    if not math.isfinite(alpha):
        raise ValueError(f"--steer_alpha must be a finite number, got {config.steer_alpha!r}")
    return [steer(_direction("--steer", config.steer), config.steer_layer, alpha, config.intervention_positions,
                  source=os.path.abspath(config.steer))]


def _direction(flag, path):
    try:
        return load_direction(path)[0]
    except FileNotFoundError:
        raise ValueError(f"{flag} {path}: no such file (a .safetensors direction file or a .npy vector)") from None
    except ValueError as exc:
        raise ValueError(f"{flag}: {exc}") from None


def entries_for(model, interventions):
    """The interventions' entries with canonical layer names, checked against `model` (the layer exists,
    the direction's size is the hidden size); ValueError (one line) otherwise."""
    try:
        return Interventions(model, interventions).entries
    except ValueError as exc:
        raise ValueError(f"--steer_layer / --ablate_layer / interventions: {' '.join(str(exc).split())}") from None
