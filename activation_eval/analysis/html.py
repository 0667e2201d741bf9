"""HTML pieces the report's sections share: escaping, tables, numbers, inline figures, failure notes.

Every text from a run is escaped with html.escape (quote=True: safe in text and attribute values);
figures are inline base64 PNGs, so a page needs nothing from the network.

Public names:
    esc(text) -> str                               html.escape
    table(headers, rows, cls="") -> str            a <table> of escaped cells
    num(value, ci=None, fmt="{:.3f}") -> str       "0.812 [0.740, 0.871]", "-" for None
    pct(value, ci) -> str                          "52.5% [43.7%, 61.1%]"
    failed(what, exc) -> str                       a note saying why a section or figure is missing
    png(plot, *args, **kwargs) -> str              run a plot function into a temp file: an inline <img>
    figure_or_note(what, plot, *args, **kwargs)    png(), or failed() when the plot raises

Example:
    >>> table(["layer", "auroc"], [["<b>", num(0.5, (0.4, 0.6))]]).split("<tbody>")[1]
    '<tr><td>&lt;b&gt;</td><td>0.500 [0.400, 0.600]</td></tr></tbody></table>'
    >>> failed("The logit lens", ValueError("no <model>"))
    '<p class="note">The logit lens not available: no &lt;model&gt;</p>'
"""
import base64
import html
import os
import tempfile
from collections.abc import Callable, Sequence
from typing import Any

from ..schema.estimates import Interval


def esc(text: str) -> str:
    """html.escape with quote=True."""
    return html.escape(text)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], cls: str = "") -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{esc(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def num(value: float | None, ci: Interval | None = None, fmt: str = "{:.3f}") -> str:
    if value is None:
        return "-"
    text = fmt.format(value)
    return text + (f" [{fmt.format(ci[0])}, {fmt.format(ci[1])}]" if ci and ci[0] is not None and ci[1] is not None
                   else "")


def pct(value: float | None, ci: Sequence[float | None] | None) -> str:
    if value is None:
        return "-"
    return f"{value:.1%} [{ci[0]:.1%}, {ci[1]:.1%}]" if ci and ci[0] is not None and ci[1] is not None else f"{value:.1%}"


def failed(what: str, exc: BaseException) -> str:
    msg = " ".join(str(exc).split()) or type(exc).__name__
    return f'<p class="note">{esc(what)} not available: {esc(msg)}</p>'


def png(plot: Callable[..., str], *args: Any, **kwargs: Any) -> str:
    """Run a plot function (its path argument after `args`) into a temp file; -> an <img> with the PNG inline."""
    with tempfile.TemporaryDirectory() as tmp:
        path = plot(*args, os.path.join(tmp, "figure.png"), **kwargs)
        with open(path, "rb") as f:
            data = base64.b64encode(f.read()).decode("ascii")
    return f'<img alt="figure" src="data:image/png;base64,{data}">'


def figure_or_note(what: str, plot: Callable[..., str], *args: Any, **kwargs: Any) -> str:
    try:
        return png(plot, *args, **kwargs)
    except Exception as exc:  # noqa: BLE001 - a figure that cannot be drawn does not cost the tables
        return failed(what, exc)
