"""The names every room shares: layer names, capture position modes, analysis reductions.

One owner for each: capture, store, run, the harnesses and analysis all parse and format these
names here, never with their own string tests.

Public names:
    EMBEDDINGS, FINAL_NORM           "embeddings", "final_norm"
    layer_name(i) -> "layer_<i>"     the name of decoder layer i
    decoder_index(name) -> int | None    i for "layer_<i>", else None
    is_decoder_layer(name) -> bool
    model_layer_names(n_layers, final_norm=True) -> ["embeddings", "layer_0", ..., "final_norm"]
    PositionMode, POSITION_MODES     what a capture keeps: all | prompt | generated | last_prompt | answer
    Positions                        a PositionMode or a list of token indices
    parse_positions(value) -> Positions  the one parser of a positions request
    keeps_generated(positions) -> bool   does the capture keep generated positions?
    prompt_rows(positions) -> "all" | "last" | "none"   rows of the prompt forward a capture keeps
    Reduction, REDUCTIONS, ANSWER_REDUCTIONS, MEAN_REDUCTIONS, AUTO, HEATMAP_POSITIONS
                                     how the analysis turns a record into one vector per question
    parse_reduce(value) -> Reduction | "auto" | int   the one check of a reduce= value

Example:
    >>> decoder_index("layer_12"), decoder_index("final_norm"), layer_name(3)
    (12, None, 'layer_3')
    >>> model_layer_names(2)
    ['embeddings', 'layer_0', 'layer_1', 'final_norm']
    >>> parse_positions("0,5,-1"), parse_positions("answer"), prompt_rows("answer")
    ([0, 5, -1], 'answer', 'last')
    >>> parse_reduce("answer_first"), parse_reduce(3)
    ('answer_first', 3)
"""
from typing import Final, Literal, SupportsIndex, TypeAlias, get_args

EMBEDDINGS: Final = "embeddings"        # hidden_states[0]: the input of the first decoder layer
FINAL_NORM: Final = "final_norm"        # the final norm's output (transformers' last hidden state)
_LAYER_PREFIX: Final = "layer_"         # layer_i: the raw output of decoder layer i


def layer_name(i: int) -> str:
    """The name of decoder layer `i` (0-based)."""
    return f"{_LAYER_PREFIX}{int(i)}"


def decoder_index(name: object) -> int | None:
    """i for "layer_<i>" (digits only), else None (embeddings, final_norm, a module path)."""
    if isinstance(name, str) and name.startswith(_LAYER_PREFIX):
        digits = name[len(_LAYER_PREFIX):]
        if digits.isascii() and digits.isdigit():
            return int(digits)
    return None


def is_decoder_layer(name: object) -> bool:
    return decoder_index(name) is not None


def model_layer_names(n_layers: int, final_norm: bool = True) -> list[str]:
    """Every canonical name of a model with `n_layers` decoder layers, in forward order."""
    return [EMBEDDINGS] + [layer_name(i) for i in range(n_layers)] + ([FINAL_NORM] if final_norm else [])


# ----------------------------------------------------------------------------- positions (capture)

PositionMode: TypeAlias = Literal["all", "prompt", "generated", "last_prompt", "answer"]
POSITION_MODES: tuple[PositionMode, ...] = get_args(PositionMode)
Positions: TypeAlias = PositionMode | list[int]


def parse_positions(positions: object = "all") -> Positions:
    """A positions request: None -> "all"; a mode; ints (a list, one int, or a string "0,5,-1")."""
    if positions is None:
        return "all"
    if isinstance(positions, str):
        for mode in POSITION_MODES:
            if positions == mode:
                return mode
        try:
            positions = [int(p) for p in positions.split(",") if p.strip()]
        except ValueError:
            raise ValueError(f"unknown positions {positions!r}; use one of {', '.join(POSITION_MODES)} "
                             f"or comma-separated token indices like 0,5,-1") from None
    if isinstance(positions, int) and not isinstance(positions, bool):
        positions = [positions]
    if not isinstance(positions, (list, tuple)) or not positions or not all(
            isinstance(p, int) and not isinstance(p, bool) for p in positions):
        raise ValueError(f"positions must be one of {', '.join(POSITION_MODES)} or a non-empty list of ints, "
                         f"got {positions!r}")
    return list(positions)


def keeps_generated(positions: Positions) -> bool:
    """Does a capture with these positions keep generated positions (index lists: maybe)?"""
    return positions not in ("prompt", "last_prompt")


def prompt_rows(positions: Positions) -> Literal["all", "last", "none"]:
    """Which rows of the prompt forward (the first, whole-prompt call of a layer) a capture keeps:
    "none" (generated), "last" (last_prompt, answer: never hold the whole prompt's rows) or "all"."""
    if positions == "generated":
        return "none"
    return "last" if positions in ("last_prompt", "answer") else "all"


# ----------------------------------------------------------------------------- reductions (analysis)

Reduction: TypeAlias = Literal["last_prompt", "mean_prompt", "last", "answer_first", "answer_mean", "answer_last"]
REDUCTIONS: tuple[Reduction, ...] = get_args(Reduction)
ANSWER_REDUCTIONS: tuple[Reduction, ...] = ("answer_first", "answer_mean", "answer_last")
MEAN_REDUCTIONS: tuple[Reduction, ...] = ("mean_prompt", "answer_mean")    # a mean over rows (others: one row)
AUTO: Final = "auto"        # answer_first when the run captured generated positions, else last_prompt
HEATMAP_POSITIONS: tuple[Reduction, ...] = ("last_prompt", "answer_first", "answer_mean", "answer_last")


def parse_reduce(reduce: object) -> Reduction | Literal["auto"] | int:
    """One of REDUCTIONS, AUTO or an int token index >= 0 (numpy ints too; a digit string is an index)."""
    if isinstance(reduce, str):
        text = reduce.strip()
        if text == AUTO:
            return AUTO
        for name in REDUCTIONS:
            if text == name:
                return name
        if text.isascii() and text.isdigit():
            return int(text)
    elif isinstance(reduce, SupportsIndex) and not isinstance(reduce, bool) and reduce.__index__() >= 0:
        return reduce.__index__()
    raise ValueError(f"reduce must be one of {', '.join(REDUCTIONS + (AUTO,))} or a token index >= 0, got {reduce!r}")


VOCABULARIES = {"layer names": (EMBEDDINGS, "layer_<i>", FINAL_NORM), "position modes (--positions)": POSITION_MODES,
                "reductions (--reduce)": REDUCTIONS + (AUTO, "<token index>")}
