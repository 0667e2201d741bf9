"""Which token positions a capture keeps: the one parser of a positions request, and the
absolute positions kept for one example.

Public names:
    POSITION_MODES     ("all", "prompt", "generated", "last_prompt", "answer")
    parse_positions(positions) -> "all" | "prompt" | "generated" | "last_prompt" | "answer" | [int, ...]
    kept_positions(positions, prompt_len, gen_len) -> [absolute position, ...]
    prompt_rows(positions) -> "all" | "last" | "none"   the rows of the prompt forward a capture must keep

Example:
    >>> parse_positions("0,5,-1")
    [0, 5, -1]
    >>> kept_positions("generated", 4, 3)        # prompt 0..3; generated tokens fed back: 4, 5
    [4, 5]
    >>> kept_positions("answer", 4, 3)           # the last prompt token and the generated tokens fed back
    [3, 4, 5]
    >>> prompt_rows("answer")                    # the prompt forward keeps its last row only
    'last'

With the KV cache an example with P prompt and N generated tokens has activations at positions
0 .. P+N-2: the last generated token is never fed back. "answer" = "last_prompt" + "generated"
(P-1 .. P+N-2): the position that reads the question and every answer position, without the rest
of the prompt; with nothing generated (log-likelihood scoring) it is P-1, as "last_prompt".
"""
__all__ = ["POSITION_MODES", "parse_positions", "kept_positions", "prompt_rows"]

POSITION_MODES = ("all", "prompt", "generated", "last_prompt", "answer")


def parse_positions(positions="all"):
    """'all' | 'prompt' | 'generated' | 'last_prompt' | 'answer' | ints (list, or a string '0,5,-1')."""
    if positions is None:
        return "all"
    if isinstance(positions, str):
        if positions in POSITION_MODES:
            return positions
        try:
            positions = [int(p) for p in positions.split(",") if p.strip()]
        except ValueError:
            raise ValueError(f"unknown positions {positions!r}; use one of {', '.join(POSITION_MODES)} "
                             f"or comma-separated token indices like 0,5,-1") from None
    if isinstance(positions, int) and not isinstance(positions, bool):
        positions = [positions]
    if not isinstance(positions, (list, tuple)) or not positions or not all(
            isinstance(p, int) and not isinstance(p, bool) for p in positions):
        raise ValueError(f"positions must be one of {', '.join(POSITION_MODES)} or a non-empty list of ints, got {positions!r}")
    return list(positions)


def kept_positions(positions, prompt_len, gen_len):
    """Absolute positions kept for one example with prompt_len prompt and gen_len generated tokens."""
    covered = prompt_len + max(gen_len, 1) - 1  # positions 0 .. P+N-2 have activations
    if positions == "all":
        return list(range(covered))
    if positions == "prompt":
        return list(range(prompt_len))
    if positions == "last_prompt":
        return [prompt_len - 1]
    if positions == "generated":
        return list(range(prompt_len, covered))
    if positions == "answer":
        return list(range(prompt_len - 1, covered))
    kept = []
    for p in positions:
        if not -covered <= p < covered:
            raise ValueError(f"position {p} is out of range: this example has activations at positions "
                             f"0 .. {covered - 1} ({prompt_len} prompt + {gen_len} generated tokens; the last "
                             f"generated token has none)")
        kept.append(p % covered)
    return kept



def prompt_rows(positions):
    """Which rows of the prompt forward (the first, whole-prompt call of a layer) a capture keeps:
    "none" (generated), "last" (last_prompt, answer: never hold the whole prompt's rows) or "all"."""
    if positions == "generated":
        return "none"
    return "last" if positions in ("last_prompt", "answer") else "all"
