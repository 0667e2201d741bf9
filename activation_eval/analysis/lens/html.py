"""The report's logit lens section, from a LensResult.

Public names:
    lens_html(result) -> str     the setup line (questions left out), the caveats, the plot, the
                                 correct-vs-incorrect table, the groups' table

Example:
    >>> from activation_eval.analysis.lens import logit_lens_run
    >>> lens_html(logit_lens_run("results/mc", layers=["layer_5"], progress=False))[:46]
    '<h2>Logit lens</h2><p>Read at: auto: last prom'
"""
from ...schema.lens import LensResult
from ..html import esc, num, png, table
from .compare import lens_comparison
from .plots import plot_logit_lens
from .text import skipped_line


def lens_html(result: LensResult) -> str:
    """The logit lens section of the report."""
    rows = [[name] + [num(g.median_rank, g.median_rank_ci, "{:.0f}") for g in (groups.correct, groups.incorrect)]
            + [num(g.mean_prob, g.mean_prob_ci, "{:.3g}") for g in (groups.correct, groups.incorrect)]
            for name, groups in result.layers.items()]
    return ("<h2>Logit lens</h2>"
            f"<p>Read at: {esc(result.position)}; gold: {esc(result.gold)}; intervals: {esc(result.interval)}; "
            f"chance rank {result.chance_rank:.0f}. Questions: {result.questions_used} read; "
            f"{esc(skipped_line(result))}.</p>"
            + "".join(f'<p class="note">Caveat: {esc(c)}.</p>' for c in result.caveats)
            + png(plot_logit_lens, result)
            + _comparison(result)
            + f"<h3>Per group (pooled over {esc(result.stratified_by)})</h3>"
            + table(["layer", "median rank, correct", "median rank, incorrect", "mean prob, correct",
                     "mean prob, incorrect"], rows))


def _comparison(result: LensResult) -> str:
    """The correct-vs-incorrect table (compare.lens_comparison): stratified first, pooled beside."""
    c = lens_comparison(result)
    return (f"<h3>Correct vs incorrect</h3><p>{esc(c.what)}; <b>{esc(c.line)}</b>. {esc(c.method)}.</p>"
            + (f'<p class="note">{esc(c.warning)}</p>' if c.warning else "")
            + (table(c.headers, c.rows) if c.rows else ""))
