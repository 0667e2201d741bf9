"""docs/formats.md, generated from the contracts themselves (a test checks that it is current).

Every contract module of this package follows one convention, which this generator reads:
    FORMAT_VERSION = <int>                 written into what it describes; raised on every change
    CONTRACTS = (TypeA, TypeB, ...)        the TypedDicts / dataclasses it defines, in reading order
    each field annotated Annotated[<type>, "<what it means>"]

Public names:
    MODULES                 the contract modules, in the order of the document
    render() -> str         the whole of docs/formats.md
    main(argv=None) -> int  `python -m activation_eval.schema.formats [--check] [PATH]`: write PATH
                            (default docs/formats.md), or with --check exit 1 when it differs

Example:
    >>> text = render()
    >>> text.splitlines()[0]
    '# Formats'
    >>> "| `id` |" in text and "format version" in text
    True
"""
import dataclasses
import importlib
import os
import sys
import types
import typing
from typing import Any

MODULES = ("rows", "record", "summary", "run_config", "interventions", "names",               # what producers write
           "estimates", "probe", "transfer", "causal", "lens", "stratify", "stats", "outputs")   # the analysis results
_DEFAULT_PATH = os.path.join("docs", "formats.md")
_HEADER = """# Formats

Generated from `activation_eval/schema/` by `python -m activation_eval.schema.formats`; do not edit by
hand (`make test` checks that this file is current). Each contract carries a format version, raised on
every change; readers upgrade older versions where they can and refuse newer ones by name.
"""


def render() -> str:
    parts = [_HEADER]
    for name in MODULES:
        module = importlib.import_module(f"{__package__}.{name}")
        parts.append(_module_section(name, module))
    return "\n".join(parts).rstrip() + "\n"


def _module_section(name: str, module: types.ModuleType) -> str:
    doc = (module.__doc__ or "").strip().split("\n\n")[0]
    lines = [f"## {name}", "", " ".join(doc.split()), ""]
    version = getattr(module, "FORMAT_VERSION", None)
    if version is not None:
        lines += [f"format version: {version}", ""]
    for contract in getattr(module, "CONTRACTS", ()):
        lines += _contract_table(contract)
    for title, values in getattr(module, "VOCABULARIES", {}).items():
        lines += [f"- {title}: " + ", ".join(f"`{v}`" for v in values)]
    return "\n".join(lines).rstrip() + "\n"


def _contract_table(contract: Any) -> list[str]:
    doc = " ".join((contract.__doc__ or "").split())
    lines = [f"### {contract.__name__}", "", doc, "", "| field | type | required | meaning |", "|---|---|---|---|"]
    for field, hint, required in _fields(contract):
        while typing.get_origin(hint) in (typing.NotRequired, typing.Required):
            hint = typing.get_args(hint)[0]
        meaning = next((m for m in getattr(hint, "__metadata__", ()) if isinstance(m, str)), "")
        base = hint.__origin__ if hasattr(hint, "__metadata__") else hint
        lines.append(f"| `{field}` | {_cell(_type_name(base))} | {'yes' if required else 'no'} | {_cell(meaning)} |")
    return lines + [""]


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell: no HTML tags, no column breaks."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("|", "\\|")


def _fields(contract: Any) -> list[tuple[str, Any, bool]]:
    hints = typing.get_type_hints(contract, include_extras=True)
    if dataclasses.is_dataclass(contract):
        return [(f.name, hints[f.name], f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING)
                for f in dataclasses.fields(contract)]
    required = getattr(contract, "__required_keys__", frozenset(hints))
    return [(name, hint, name in required) for name, hint in hints.items()]


def _type_name(hint: Any) -> str:
    """A short readable name of a type hint: `str`, `list[int]`, `float or null`, `"a" or "b"`."""
    if hint is type(None):
        return "null"
    if hint is Any:
        return "any"
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if typing.get_origin(hint) is typing.NotRequired or typing.get_origin(hint) is typing.Required:
        return _type_name(args[0])
    if origin is typing.Literal:
        return " or ".join(f'"{a}"' if isinstance(a, str) else str(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in args)
    if origin is typing.Annotated:
        return _type_name(args[0])
    if origin is not None:
        name = getattr(origin, "__name__", str(origin))
        return f"{name}[{', '.join(_type_name(a) for a in args)}]" if args else name
    return getattr(hint, "__name__", str(hint).replace("typing.", ""))


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    check = "--check" in args
    paths = [a for a in args if a != "--check"]
    path = paths[0] if paths else _DEFAULT_PATH
    text = render()
    if check:
        try:
            with open(path, encoding="utf-8") as f:
                current = f.read()
        except OSError:
            current = None
        if current != text:
            print(f"{path} is not current: run python -m activation_eval.schema.formats", file=sys.stderr)
            return 1
        return 0
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
