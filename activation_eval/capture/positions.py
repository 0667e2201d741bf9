"""Which token positions a capture keeps: the absolute positions kept for one example.

Public names:
    kept_positions(positions, prompt_len, gen_len) -> [absolute position, ...]
The position modes and their parser are schema/names.py's (POSITION_MODES, parse_positions, prompt_rows).

Example:
    >>> kept_positions("generated", 4, 3)        # prompt 0..3; generated tokens fed back: 4, 5
    [4, 5]
    >>> kept_positions("answer", 4, 3)           # the last prompt token and the generated tokens fed back
    [3, 4, 5]

With the KV cache an example with P prompt and N generated tokens has activations at positions
0 .. P+N-2: the last generated token is never fed back. "answer" = "last_prompt" + "generated"
(P-1 .. P+N-2): the position that reads the question and every answer position, without the rest
of the prompt; with nothing generated (log-likelihood scoring) it is P-1, as "last_prompt".
"""
from ..schema.names import Positions

__all__ = ["kept_positions"]


def kept_positions(positions: Positions, prompt_len: int, gen_len: int) -> list[int]:
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
