"""Interventions while the model answers: add a vector along a direction to a layer's output, or
project a direction out of it (directional ablation), at chosen positions, with forward hooks.

Public names:
    Intervention(kind, layer, direction, alpha=0.0, positions="all", source="")   one edit (frozen)
    steer(direction, layer, alpha, positions="all", source="") -> Intervention    output + alpha * u
    ablate(direction, layer, positions="all", source="") -> Intervention          output - (output . u) u
    Interventions(model, interventions)   context manager: the hooks, registered before any capture hook
    direction_sha256(direction) -> str    the checksum a record names a direction by
    KINDS, POSITIONS                      ("add", "ablate"), ("all", "prompt", "generated")

Example:
    >>> u = torch.zeros(64); u[3] = 1.0
    >>> batch = tok(["Capital of France?"], return_tensors="pt")
    >>> with Interventions(model, [steer(u, "layer_1", alpha=4.0)]):
    ...     steered = model(**batch, output_hidden_states=True).hidden_states[2]     # layer_1's output
    >>> plain = model(**batch, output_hidden_states=True).hidden_states[2]
    >>> torch.equal(steered[..., 3], plain[..., 3] + 4.0), torch.equal(steered[..., 4], plain[..., 4])
    (True, True)

Semantics. `u` is the unit direction (the direction divided by its norm); layers are named as in
capture (capture/layers.py): "embeddings" edits the first decoder layer's input, "layer_i" the
output of decoder layer i (what layer i+1 reads and hidden_states[i+1] shows), "final_norm" the
final norm's output, a module path that module's output. The edit is made in float32 and cast to
the layer's dtype: add = h + alpha * u, ablate = h - (h . u) u. Several interventions at one layer
apply in the order given. They run before any capture hook on the same module, so a capture
records what the next layer reads. An `add` with alpha 0 registers no hook: the run is the plain
run, bit for bit.

Positions: "all" every position of every forward; "prompt" the prompt's positions (0 .. P-1, the
last of which emits the first answer token); "generated" the generated tokens fed back (P ..).
Which forward is which is announced by the decoding loop: `prompt()`, `generated()`, or
`split(starts)` (one forward over prompt and answer, as in teacher forcing: row b's answer starts
at column starts[b]); `begin()` (model.generate) makes each hook's first forward the prompt and
the later ones generated tokens, as with the KV cache.
"""
import dataclasses
import hashlib

import torch

from .layers import hook_target, resolve_layers

__all__ = ["Intervention", "steer", "ablate", "Interventions", "direction_sha256", "KINDS", "POSITIONS"]

KINDS = ("add", "ablate")
POSITIONS = ("all", "prompt", "generated")


@dataclasses.dataclass(frozen=True, eq=False)
class Intervention:
    """One edit of one layer's output; `entry()` is how run_config.json and every row record it."""
    kind: str                       # "add" or "ablate"
    layer: object                   # a layer name, an int (negative from the end) or a module path
    direction: torch.Tensor         # (hidden,), any non-zero norm: it is made a unit vector
    alpha: float = 0.0              # add: the added vector is alpha * u, in the residual's own units
    positions: str = "all"          # all | prompt | generated
    source: str = ""                # where the direction came from (a file, "causal: fold 2 mass_mean", ...)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"intervention kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if self.positions not in POSITIONS:
            raise ValueError(f"intervention positions must be one of {', '.join(POSITIONS)}, got {self.positions!r}")
        try:
            alpha = float(self.alpha)
        except (TypeError, ValueError):
            raise ValueError(f"steering alpha must be a number, got {self.alpha!r}") from None
        if not torch.isfinite(torch.tensor(alpha)):
            raise ValueError(f"steering alpha must be a finite number, got {self.alpha!r}")
        object.__setattr__(self, "alpha", alpha if self.kind == "add" else 0.0)
        object.__setattr__(self, "direction", _unit(self.direction))

    @property
    def active(self):
        """False for an add of alpha 0: it changes nothing, so it registers no hook."""
        return self.kind == "ablate" or self.alpha != 0.0

    def entry(self, layer=None):
        """The JSON form: kind, layer, positions, alpha (None for ablate), the direction's checksum,
        source and size. `layer`: the canonical name, once resolved against a model."""
        return {"kind": self.kind, "layer": str(self.layer if layer is None else layer), "positions": self.positions,
                "alpha": self.alpha if self.kind == "add" else None,
                "direction_sha256": _sha256(self.direction), "direction_source": self.source,
                "hidden_size": int(self.direction.numel())}


def steer(direction, layer, alpha, positions="all", source=""):
    """Add alpha * u (u = direction / |direction|) to `layer`'s output at `positions`."""
    return Intervention("add", layer, direction, alpha, positions, source)


def ablate(direction, layer, positions="all", source=""):
    """Project u out of `layer`'s output at `positions`: h - (h . u) u."""
    return Intervention("ablate", layer, direction, 0.0, positions, source)


def direction_sha256(direction):
    """sha256 of the unit direction's float32 bytes (little-endian): what was steered along, whatever
    the file's scale (up to the rounding of the division by the norm)."""
    return _sha256(_unit(direction))


def _sha256(unit):
    """sha256 of a unit vector's float32 bytes (normalising it again would change its last bits)."""
    return hashlib.sha256(unit.numpy().astype("<f4").tobytes()).hexdigest()


def _unit(direction):
    if not isinstance(direction, torch.Tensor):
        try:
            direction = torch.as_tensor(direction, dtype=torch.float32)
        except (TypeError, ValueError, RuntimeError):
            raise ValueError(f"a direction must be a vector of numbers, got {type(direction).__name__}") from None
    vector = direction.detach().to("cpu", torch.float32)
    if vector.dim() != 1 or vector.numel() == 0:
        raise ValueError(f"a direction must be one vector (hidden,), got shape {tuple(vector.shape)}")
    if not bool(torch.isfinite(vector).all()):
        raise ValueError("a direction must hold finite numbers (it has NaN or infinity)")
    norm = vector.norm()
    if not norm > 0:
        raise ValueError("a direction must not be all zeros (it has no direction)")
    return (vector / norm).contiguous()


class Interventions:
    """Register the interventions' hooks on entry (prepended, so they run before capture hooks on the
    same module), remove exactly those on exit. See the module docstring for the phase methods."""

    def __init__(self, model, interventions=()):
        self.model = model
        self.interventions = list(interventions or ())
        for item in self.interventions:
            if not isinstance(item, Intervention):
                raise TypeError(f"interventions must be Intervention objects (steer(...), ablate(...)), "
                                f"got {type(item).__name__}")
        names = [resolve_layers(model, [item.layer])[0] for item in self.interventions]
        self.entries = [item.entry(name) for item, name in zip(self.interventions, names)]
        self._check_sizes(names)
        groups = {}                                    # (module, pre|post) -> [intervention, ...] in order
        for item, name in zip(self.interventions, names):
            if item.active:
                groups.setdefault(hook_target(model, name), []).append(item)
        self._groups = groups
        self._handles = []
        self._phase = None                             # None: begin() rules; "prompt" | "generated" | starts
        self._calls = {}

    def _check_sizes(self, names):
        width = self.model.get_input_embeddings().weight.shape[1]
        for item, name in zip(self.interventions, names):
            if "." not in name and item.direction.numel() != width:
                raise ValueError(f"the direction for {name} has {item.direction.numel()} numbers but the model's "
                                 f"hidden size is {width}: take a direction from a run of this model")

    def __enter__(self):
        try:
            for (module, kind), items in self._groups.items():
                key = len(self._handles)
                if kind == "pre":
                    handle = module.register_forward_pre_hook(self._pre_hook(key, items), with_kwargs=True,
                                                              prepend=True)
                else:
                    handle = module.register_forward_hook(self._post_hook(key, items), prepend=True)
                self._handles.append(handle)
        except BaseException:
            self.remove()
            raise
        self.begin()
        return self

    def __exit__(self, *exc):
        self.remove()
        return False

    def remove(self):
        """Remove these hooks; safe to call twice."""
        while self._handles:
            self._handles.pop().remove()

    # ---------------------------------------------------------------- what the next forward is
    def begin(self):
        """A model.generate call starts: each hook's next forward is the prompt, later ones generated tokens."""
        self._phase, self._calls = None, {}

    def prompt(self):
        """The next forwards read prompt tokens only (a prefill)."""
        self._phase = "prompt"

    def generated(self):
        """The next forwards read generated tokens only (decode steps)."""
        self._phase = "generated"

    def split(self, starts):
        """The next forwards read prompt and answer: row b's answer tokens start at column starts[b]."""
        self._phase = torch.as_tensor(starts, dtype=torch.long)

    # ---------------------------------------------------------------- the hooks
    def _pre_hook(self, key, items):
        def hook(module, args, kwargs):
            if args:
                return (self._edit(key, items, args[0]),) + tuple(args[1:]), kwargs
            return args, {**kwargs, "hidden_states": self._edit(key, items, kwargs["hidden_states"])}
        return hook

    def _post_hook(self, key, items):
        def hook(module, args, output):
            if isinstance(output, torch.Tensor):
                return self._edit(key, items, output)
            return (self._edit(key, items, output[0]),) + tuple(output[1:])
        return hook

    def _edit(self, key, items, hidden):
        phase = self._phase_of(key)
        for item in items:
            where = _where(item.positions, phase, hidden)
            if where is False:
                continue
            if hidden.shape[-1] != item.direction.numel():
                raise ValueError(f"the direction for {item.layer} has {item.direction.numel()} numbers but that "
                                 f"output has {hidden.shape[-1]}")
            u = item.direction.to(hidden.device)
            if item.kind == "add":
                edited = (hidden.float() + item.alpha * u).to(hidden.dtype)
            else:
                h = hidden.float()
                edited = (h - (h @ u)[..., None] * u).to(hidden.dtype)
            hidden = edited if where is True else torch.where(where.to(hidden.device), edited, hidden)
        return hidden

    def _phase_of(self, key):
        if self._phase is not None:
            return self._phase
        call = self._calls.get(key, 0)
        self._calls[key] = call + 1
        return "prompt" if call == 0 else "generated"


def _where(positions, phase, hidden):
    """True (every position), False (none) or a (B, T, 1) bool mask of the positions to edit."""
    if positions == "all":
        return True
    if isinstance(phase, str):
        return positions == phase
    columns = torch.arange(hidden.shape[-2])[None, :]
    answer = columns >= phase[:, None]                          # (B, T)
    return (answer if positions == "generated" else ~answer)[..., None]
