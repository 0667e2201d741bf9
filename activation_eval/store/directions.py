"""Direction files: one vector (hidden,) that a run steers along or ablates (capture/intervene.py).

Public names:
    save_direction(path, vector, source="", **metadata) -> path   a .safetensors file, written atomically
    load_direction(path) -> (tensor float32 (hidden,), metadata {str: str})   checked; .safetensors or .npy
    intervention_specs(values, spell=lambda name: f"--{name}") -> [spec, ...]   the one parser of the steering
                             arguments (main.py's flags, lm-eval's model_args, Inspect's -M): `values` holds
                             steer, steer_layer, steer_alpha, ablate, ablate_layer, intervention_positions;
                             each spec is the keyword arguments of capture/intervene.Intervention (kind,
                             direction, layer, alpha, positions, source), ablation first; ValueError naming
                             the argument as spell(name) spells it
    STEERING_ARGS            those six argument names, with their defaults
    DIRECTION_KEY            "direction": the one tensor a direction file holds
    MAX_DIRECTION            the most numbers a direction may have (a hidden size: 2**20)

Example:
    >>> save_direction("dirs/truth.safetensors", torch.randn(64), source="probe layer_3 mass_mean", layer="layer_3")
    'dirs/truth.safetensors'
    >>> vector, meta = load_direction("dirs/truth.safetensors")
    >>> vector.shape, vector.dtype, meta["source"], meta["layer"]
    (torch.Size([64]), torch.float32, 'probe layer_3 mass_mean', 'layer_3')

The format: a plain .safetensors file (safetensors.torch.load_file reads it) holding exactly one
tensor, "direction", 1-D float32, and string metadata ("source" and whatever else was passed). A
.npy file of one 1-D float vector (numpy.save) is read too, with allow_pickle=False. The vector is
kept as saved (not normalized: the intervention makes it a unit vector, and its checksum is the
unit vector's).

Files from strangers are hostile: a .safetensors file is read through store/safetensors_file.py's
checks (header length, entries, byte spans) before a byte of data is read, a .npy file's header is
checked against the file's size before numpy reads it. Any refusal is one line, a CorruptFileError
ending with the path: another tensor than "direction", 2-D, an integer dtype, NaN or infinity,
all zeros, a garbled file.
"""
import math
import os
import tokenize

import numpy as np
import torch

from .atomic import atomic_write, write_pieces
from .errors import CorruptFileError
from .safetensors_file import DTYPES, header_bytes, read_header, read_tensor

__all__ = ["save_direction", "load_direction", "intervention_specs", "STEERING_ARGS", "DIRECTION_KEY",
           "MAX_DIRECTION"]

DIRECTION_KEY = "direction"
STEERING_ARGS = {"steer": None, "steer_layer": None, "steer_alpha": None, "ablate": None, "ablate_layer": None,
                 "intervention_positions": "all"}
MAX_DIRECTION = 2 ** 20          # numbers in a direction: far above any model's hidden size
_FLOATS = {"F16", "BF16", "F32", "F64"}
_NPY_READERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
_PREFIX = "corrupt or unreadable activation record ("


def _refuse(path, reason):
    return CorruptFileError(f"not a usable direction file ({reason}): {path}")


def save_direction(path, vector, source="", **metadata):
    """Write `vector` (1-D, any float dtype, saved as float32) to `path` (.safetensors) atomically, with
    string metadata: "source" (where it came from) and `metadata` (values made strings). Returns path."""
    tensor = _checked(torch.as_tensor(vector).detach().to("cpu"), os.fspath(path))
    tensor = tensor.to(torch.float32).contiguous()
    meta = {"source": str(source), **{str(k): str(v) for k, v in metadata.items()}}
    head = header_bytes([(DIRECTION_KEY, torch.float32, tuple(tensor.shape))], meta)
    data = tensor.numpy().astype("<f4").tobytes()
    atomic_write(os.fspath(path), lambda tmp: write_pieces(tmp, [head, data]))
    return os.fspath(path)


def load_direction(path):
    """(the direction as a float32 tensor (hidden,), its metadata {str: str}) from a .safetensors file
    save_direction wrote (or any with one 1-D float tensor "direction"), or a .npy of one 1-D float
    vector ({} metadata). CorruptFileError (one line, ending with the path) for anything else;
    FileNotFoundError when there is no file."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no direction file at {path}")
    if path.lower().endswith(".npy"):
        return _checked(torch.from_numpy(_read_npy(path)), path), {}
    with open(path, "rb", buffering=0) as f:
        size = os.fstat(f.fileno()).st_size
        try:
            entries, meta, start, _ = read_header(f, path, size)
        except CorruptFileError as exc:
            raise _refuse(path, _reason(str(exc), path)) from None
        if set(entries) != {DIRECTION_KEY}:
            names = ", ".join(sorted(map(repr, entries)))[:200] or "none"
            raise _refuse(path, f"it must hold one tensor named {DIRECTION_KEY!r}, it holds {names}")
        entry = entries[DIRECTION_KEY]
        if entry["dtype"] not in _FLOATS:
            raise _refuse(path, f"the direction is {entry['dtype']}, not a float tensor")
        _check_shape(entry["shape"], path)
        tensor = read_tensor(f, DIRECTION_KEY, entry, start, path)
    return _checked(tensor, path), dict(meta)


def _reason(message, path):
    """The reason inside store/errors.corrupt's message about `path`."""
    suffix = f"): {path}"
    if message.startswith(_PREFIX) and message.endswith(suffix):
        return message[len(_PREFIX):-len(suffix)]
    return message


def _check_shape(shape, path):
    if len(shape) != 1:
        raise _refuse(path, f"the direction must be one vector (hidden,), it has shape {tuple(shape)}")
    if not 0 < shape[0] <= MAX_DIRECTION:
        raise _refuse(path, f"the direction has {shape[0]} numbers; a hidden size is 1 to {MAX_DIRECTION}")


def _read_npy(path):
    """The 1-D float array of a .npy file, its header checked against the file's size before numpy reads it."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        try:
            version = np.lib.format.read_magic(f)
            if version not in _NPY_READERS:
                raise ValueError(f"unsupported .npy version {version}")
            shape, _, dtype = _NPY_READERS[version](f)          # a literal header: no pickle is read
        # numpy parses the header dict with tokenize and ast.literal_eval: a mangled one raises TokenError
        # (not a ValueError) or, nested deep, RecursionError (found by the seeded fuzz in test_directions.py)
        except (ValueError, OSError, SyntaxError, TypeError, tokenize.TokenError, RecursionError) as exc:
            raise _refuse(path, f"not a .npy file: {str(exc)[:200]}") from None
        if dtype.hasobject or dtype.kind != "f":
            raise _refuse(path, f"the direction is {dtype}, not a float vector")
        _check_shape(list(shape), path)
        if size - f.tell() != shape[0] * dtype.itemsize:
            raise _refuse(path, f"the header promises {shape[0] * dtype.itemsize} bytes of data, the file holds "
                                f"{size - f.tell()} (truncated?)")
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise _refuse(path, f"not a .npy file: {str(exc)[:200]}") from None
    return np.ascontiguousarray(array, dtype=np.float32)


def _checked(tensor, path):
    """The direction as float32, refused when it is not one finite, non-zero vector."""
    if not (tensor.is_floating_point() and tensor.dtype in DTYPES.values()):
        raise _refuse(path, f"the direction is {tensor.dtype}, not a float tensor")
    _check_shape(list(tensor.shape), path)
    vector = tensor.to(torch.float32)
    if not bool(torch.isfinite(vector).all()):
        raise _refuse(path, "the direction holds NaN or infinity")
    if not bool((vector != 0).any()):
        raise _refuse(path, "the direction is all zeros: it has no direction")
    return vector.contiguous()


def intervention_specs(values, spell=lambda name: f"--{name}"):
    """[{kind, direction, layer, alpha, positions, source}, ...] from the steering arguments in `values` (a
    mapping; missing ones take STEERING_ARGS' defaults): --ablate FILE --ablate_layer L first, then --steer
    FILE --steer_layer L --steer_alpha A (with the same direction at the same layer, that sets the component
    along it to alpha). Each file is read and checked here; `source` is its absolute path."""
    v = {**STEERING_ARGS, **{k: values[k] for k in STEERING_ARGS if k in values and values[k] is not None}}
    positions = v["intervention_positions"]
    specs = []
    if v["ablate"] is not None or v["ablate_layer"] is not None:
        if v["ablate"] is None or v["ablate_layer"] is None:
            raise ValueError(f"{spell('ablate')} FILE and {spell('ablate_layer')} LAYER go together: add "
                             + spell("ablate_layer" if v["ablate_layer"] is None else "ablate"))
        specs.append({"kind": "ablate", "direction": _flag_direction(spell("ablate"), v["ablate"]),
                      "layer": v["ablate_layer"], "alpha": 0.0, "positions": positions,
                      "source": os.path.abspath(v["ablate"])})
    steering = ("steer", "steer_layer", "steer_alpha")
    if any(v[name] is not None for name in steering):
        missing = [spell(name) for name in steering if v[name] is None]
        if missing:
            raise ValueError(f"{spell('steer')} FILE {spell('steer_layer')} LAYER {spell('steer_alpha')} A go "
                             f"together: add {' '.join(missing)}")
        try:
            alpha = float(v["steer_alpha"])
        except (TypeError, ValueError):
            raise ValueError(f"{spell('steer_alpha')} must be a number, got {v['steer_alpha']!r}") from None
        if not math.isfinite(alpha):
            raise ValueError(f"{spell('steer_alpha')} must be a finite number, got {v['steer_alpha']!r}")
        specs.append({"kind": "add", "direction": _flag_direction(spell("steer"), v["steer"]),
                      "layer": v["steer_layer"], "alpha": alpha, "positions": positions,
                      "source": os.path.abspath(v["steer"])})
    if not specs and positions != "all":
        raise ValueError(f"{spell('intervention_positions')} needs {spell('steer')} or {spell('ablate')}")
    return specs


def _flag_direction(flag, path):
    try:
        return load_direction(path)[0]
    except FileNotFoundError:
        raise ValueError(f"{flag} {path}: no such file (a .safetensors direction file or a .npy vector)") from None
    except ValueError as exc:
        raise ValueError(f"{flag}: {exc}") from None
