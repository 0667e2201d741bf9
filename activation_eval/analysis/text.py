"""Plain-text pieces every analysis output shares: aligned tables, numbers with intervals, levels.

Public names:
    format_table(headers, rows) -> str           an aligned table, numbers right-aligned
    cell(value) -> str                           one table cell: "-" for None, floats to 4 digits
    with_ci(value, ci, fmt="{:.3f}") -> str      "0.812 [0.740, 0.871]" ("-" for None; no interval: the value)
    level_label(level) -> str                    an interval's level as written: 0.9984 -> "99.84%"
    shorten(text, n=160) -> str                  one line of at most n characters

Example:
    >>> print(format_table(["layer", "auroc"], [["layer_0", 0.5], ["final_norm", None]]))
    layer       auroc
    ----------  -----
    layer_0       0.5
    final_norm      -
    >>> with_ci(0.8123, (0.74, 0.871)), with_ci(0.1, None, "{:+.2f}"), level_label(1 - 0.05 / 31)
    ('0.812 [0.740, 0.871]', '+0.10', '99.84%')
"""
from collections.abc import Sequence
from typing import Any

from ..schema.estimates import Interval


def cell(value: Any) -> str:
    """One table cell: "-" for None, a float to 4 significant digits, a shape as 7x64."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return "x".join(str(x) for x in value)
    return str(value)


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Aligned plain-text table (the first column left-aligned, the others right-aligned)."""
    cells = [[cell(v) for v in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]

    def line(r: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
    return "\n".join([line(headers), line(["-" * w for w in widths])] + [line(r) for r in cells])


def with_ci(value: float | None, ci: Interval | None, fmt: str = "{:.3f}") -> str:
    """The value and its interval in `fmt`; "-" without a value, the value alone without an interval."""
    if value is None:
        return "-"
    if ci is None or ci[0] is None or ci[1] is None:
        return fmt.format(value)
    return f"{fmt.format(value)} [{fmt.format(ci[0])}, {fmt.format(ci[1])}]"


def level_label(level: float | None) -> str:
    """An interval's level as written next to it: 0.95 -> "95%", 1 - 0.05/31 -> "99.84%"; None -> "?%"."""
    if level is None:
        return "?%"
    return f"{round(float(level) * 100, 2):.2f}".rstrip("0").rstrip(".") + "%"


def shorten(text: Any, n: int = 160) -> str:
    """`text` on one line (whitespace runs made one space), cut to n characters with "..."."""
    flat = "" if text is None else " ".join(str(text).split())
    return flat if len(flat) <= n else flat[: n - 3] + "..."
