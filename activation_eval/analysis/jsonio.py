"""The analysis results as JSON and back: what --json prints, and reading such output again.

A result is a dataclass of activation_eval.schema; in JSON each is an object with its fields as keys
in declared order, preceded by "format_version" for the contracts that carry one. Tuples become
lists, numpy numbers plain numbers, non-finite floats null.

Public names:
    to_json(value) -> JSON-able value        any result (or dict / list of them)
    from_json(contract, data) -> contract    a result from its JSON (e.g. a saved --json output);
                                             a newer format version, a missing field or an unknown
                                             key is a ValueError naming it

Example:
    >>> from activation_eval.schema.estimates import Estimate
    >>> from activation_eval.schema.transfer import TransferResult
    >>> t = TransferResult(by="run", layer="layer_1", groups=["a", "b"], n={"a": 3, "b": 4}, level=0.95,
    ...                    auroc=[[0.5, float("nan")], [None, 0.75]], auroc_ci=[[(0.2, 0.8), None], [None, None]], notes=[],
    ...                    shared=[[0, 0], [0, 0]], in_sample=False)
    >>> data = to_json(t); data["format_version"], data["auroc"], data["auroc_ci"][0]
    (3, [[0.5, None], [None, 0.75]], [[0.2, 0.8], None])
    >>> from_json(TransferResult, data).auroc_ci[0][0]
    (0.2, 0.8)
    >>> from_json(Estimate, {"value": 1.0})
    Traceback (most recent call last):
    ...
    ValueError: Estimate: missing field 'ci'
"""
import dataclasses
import math
import sys
import types
import typing
from typing import Any, TypeVar

import numpy as np

T = TypeVar("T")
_FORMAT_VERSION = "format_version"
IGNORED_KEYS = ("plots",)           # added to a result's JSON by the command line: the files it wrote


def to_json(value: Any) -> Any:
    """`value` as plain JSON values: dataclasses as objects, tuples as lists, nan as None."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out: dict[str, Any] = {}
        version = getattr(type(value), _FORMAT_VERSION, None)
        if isinstance(version, int):
            out[_FORMAT_VERSION] = version
        for f in dataclasses.fields(value):
            out[f.name] = to_json(getattr(value, f.name))
        return out
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.ndarray) or (type(value).__module__ == "torch" and hasattr(value, "tolist")):
        return to_json(value.tolist())            # a tensor (torch is not imported here: a record may hold one)
    return value if value is None or isinstance(value, (str, int)) else str(value)


def from_json(contract: type[T], data: Any) -> T:
    """The `contract` dataclass made from its JSON (to_json's output)."""
    return typing.cast(T, _decode(contract, data, contract.__name__))


def _decode(hint: Any, data: Any, where: str) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Annotated:
        return _decode(args[0], data, where)
    if hint is Any:
        return data
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        return _dataclass(hint, data, where)
    if origin in (typing.Union, types.UnionType):
        if data is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return _decode(option, data, where)
            except ValueError as exc:
                errors.append(str(exc))
        raise ValueError(errors[0] if len(errors) == 1 else f"{where}: {data!r} fits none of {hint}")
    if origin is typing.Literal:
        if data not in args:
            raise ValueError(f"{where}: {data!r} is not one of {args}")
        return data
    if origin is dict:
        _expect(data, dict, where)
        return {k: _decode(args[1], v, f"{where}[{k!r}]") for k, v in data.items()}
    if origin is list:
        _expect(data, list, where)
        return [_decode(args[0], v, f"{where}[{i}]") for i, v in enumerate(data)]
    if origin is tuple:
        _expect(data, list, where)
        if len(data) != len(args):
            raise ValueError(f"{where}: {len(data)} values, expected {len(args)}")
        return tuple(_decode(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, data)))
    if hint is float:
        if isinstance(data, bool) or not isinstance(data, (int, float)):
            raise ValueError(f"{where}: {data!r} is not a number")
        return float(data)
    if hint in (int, str, bool):
        if not isinstance(data, hint) or (hint is int and isinstance(data, bool)):
            raise ValueError(f"{where}: {data!r} is not {hint.__name__}")
        return data
    raise ValueError(f"{where}: cannot read a {hint!r} from JSON")


def _expect(data: Any, kind: type, where: str) -> None:
    if not isinstance(data, kind):
        raise ValueError(f"{where}: expected a JSON {'object' if kind is dict else 'array'}, got {type(data).__name__}")


def _dataclass(contract: type, data: Any, where: str) -> Any:
    _expect(data, dict, where)
    version = getattr(contract, _FORMAT_VERSION, None)
    if isinstance(version, int) and isinstance(data.get(_FORMAT_VERSION), int) and data[_FORMAT_VERSION] > version:
        raise ValueError(f"{where}: format version {data[_FORMAT_VERSION]} is newer than this reader's ({version}): "
                         f"read it with a newer activation-eval")
    hints = typing.get_type_hints(contract, include_extras=True, globalns=vars(sys.modules[contract.__module__]))
    fields = [f.name for f in dataclasses.fields(contract)]
    unknown = set(data) - set(fields) - {_FORMAT_VERSION, *IGNORED_KEYS}
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {', '.join(sorted(map(repr, unknown)))}")
    missing = [name for name in fields if name not in data]
    if missing:
        raise ValueError(f"{where}: missing field {missing[0]!r}")
    return contract(**{name: _decode(hints[name], data[name], f"{where}.{name}") for name in fields})
