"""The lens result as the command line prints it (--logit_lens without --json).

Public names:
    lens_text(result) -> str     the setup lines (with the questions left out and the caveats), the
                                 correct-vs-incorrect table (stratified first), and the groups' curves per
                                 layer with the most common top-1 token
    skipped_line(result) -> str  the questions left out, and why

Example:
    >>> from activation_eval.analysis.lens import logit_lens_run
    >>> print(lens_text(logit_lens_run("results/mc", layers=["layer_5"], progress=False)).splitlines()[0])
    run:        results/mc
"""
from collections import Counter

from ...schema.lens import GroupCurve, LensResult
from ..text import format_table, with_ci
from .compare import lens_comparison


def lens_text(result: LensResult) -> str:
    """The --logit_lens text output of `result`."""
    first = result.layers[result.layer_names[0]]
    return "\n".join([
        f"run:        {result.run_dir}", f"model:      {result.model}", f"position:   {result.position}",
        f"gold:       {result.gold}",
        f"questions:  {result.questions_used} ({first.correct.n} correct, {first.incorrect.n} incorrect with a gold "
        f"token); {skipped_line(result)}",
        f"intervals:  {result.interval}",
        *[f"caveat:     {c}" for c in result.caveats],
        f"chance:     rank {result.chance_rank:.0f}, probability {result.chance_prob_per_token:.2g} per token "
        f"(vocab {result.vocab_size})", "", *_comparison_lines(result), "",
        f"per group (pooled over {result.stratified_by}):",
        format_table(["layer", "rank_correct [95% CI]", "rank_incorrect [95% CI]", "prob_correct [95% CI]",
                      "prob_incorrect [95% CI]", "most common top-1"], _group_rows(result)),
        "", "--json lists every question's rank, probability and top-5 tokens per layer"])


def skipped_line(result: LensResult) -> str:
    """The questions left out: without an answer span (reading answer), without the position read."""
    span = (f"{result.skipped_no_answer_span} left out without an answer span (no answer_positions, or the extracted "
            f"answer not in the response), " if result.reading == "answer" else "")
    return span + f"{result.skipped_no_position} left out (the position read was not kept)"


def _group_rows(result: LensResult) -> list[list[str]]:
    rows = []
    for name, groups in result.layers.items():
        top = Counter(q.layers[name].top[0][0] for q in result.questions)
        common, count = top.most_common(1)[0]
        pair: tuple[GroupCurve, GroupCurve] = (groups.correct, groups.incorrect)
        rows.append([name] + [with_ci(g.median_rank, g.median_rank_ci, "{:.0f}") for g in pair]
                    + [with_ci(g.mean_prob, g.mean_prob_ci, "{:.3f}") for g in pair]
                    + [f"{common!r} ({count}/{len(result.questions)})"])
    return rows


def _comparison_lines(result: LensResult) -> list[str]:
    """The correct-vs-incorrect lines (compare.lens_comparison): stratified first, pooled beside."""
    c = lens_comparison(result)
    table = ["", format_table(c.headers, c.rows)] if c.rows else []
    return ([f"compare:    {c.what}; {c.line}", f"            {c.method}"] + table + ([c.warning] if c.warning else []))
