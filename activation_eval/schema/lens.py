"""The logit lens result: what every captured layer would predict as the answer's first token.

analysis/lens/ builds it (logit_lens_run); the --json output of `analyze_activations.py --logit_lens`
is this result, its fields as keys, plus "format_version" (and "plots"). Each layer's activation at
the last prompt token goes through the model's final norm and unembedding; ranks run from 1 (top) to
the vocabulary size.

Public names:
    LensResult          the whole result
    GroupCurve          one group's (correct / incorrect / all) median rank and mean probability at a layer
    LensGroups          the three groups at a layer
    LensDifferences     incorrect - correct within strata at a layer: mean ln(rank) and mean probability
    QuestionLens        one question: its gold tokens and, per layer, rank, probability and top tokens
    QuestionLayer       one question at one layer
    FORMAT_VERSION, CONTRACTS

Example:
    >>> g = GroupCurve(n=4, median_rank=12.0, median_rank_ci=(3.0, 40.0), mean_prob=0.02, mean_prob_ci=(0.0, 0.05))
    >>> g.median_rank, LensResult.format_version
    (12.0, 1)
"""
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar

from .estimates import Interval
from .stratify import Difference

FORMAT_VERSION = 1


@dataclass(frozen=True, kw_only=True)
class GroupCurve:
    """One group of questions at one layer (intervals: 95% percentile bootstrap, a question's samples together)."""
    n: Annotated[int, "questions of the group with a gold token"]
    median_rank: Annotated[float | None, "median rank of the gold first token (1 = top; None: no question)"]
    median_rank_ci: Annotated[Interval, "its interval"]
    mean_prob: Annotated[float | None, "mean probability of the gold first token (summed over its candidates)"]
    mean_prob_ci: Annotated[Interval, "its interval"]


@dataclass(frozen=True, kw_only=True)
class LensGroups:
    """The groups of questions at one layer, pooled over the strata."""
    correct: Annotated[GroupCurve, "questions answered correctly"]
    incorrect: Annotated[GroupCurve, "questions answered wrongly"]
    all: Annotated[GroupCurve, "every question"]


@dataclass(frozen=True, kw_only=True)
class LensDifferences:
    """Incorrect - correct at one layer, within the strata (stratified_by) and pooled beside."""
    log_rank: Annotated[Difference, "of the mean ln(gold rank): > 0 when the gold token ranks lower for wrong answers"]
    prob: Annotated[Difference, "of the mean gold probability"]


@dataclass(frozen=True, kw_only=True)
class QuestionLayer:
    """One question at one layer."""
    top: Annotated[list[tuple[str, float]], "the top-k tokens: [token text, probability], most probable first"]
    rank: Annotated[int | None, "the best rank of any gold candidate (None: no gold token)"]
    prob: Annotated[float | None, "the summed probability of the gold candidates (None: no gold token)"]
    generated_rank: Annotated[int | None, "the rank of the first generated token (None: nothing generated)"]


@dataclass(frozen=True, kw_only=True)
class QuestionLens:
    """The lens on one question."""
    id: Annotated[Any, "the question's id (its results row's)"]
    category: Annotated[Any, "its category"]
    correct: Annotated[bool | None, "its verdict"]
    gold_token_ids: Annotated[list[int], "candidate first tokens of the gold answer (with and without a leading space)"]
    gold_tokens: Annotated[list[str], "those tokens as text"]
    first_generated_token: Annotated[str | None, "the first token the model generated, as text"]
    layers: Annotated[dict[str, QuestionLayer], "per layer"]


@dataclass(frozen=True, kw_only=True)
class LensResult:
    """The logit lens of a run: per layer, the gold first token's rank and probability, by group and
    within strata, and every question's figures."""
    format_version: ClassVar[int] = FORMAT_VERSION
    run_dir: Annotated[str, "the run folder"]
    model: Annotated[str, "the model whose final norm and unembedding were used"]
    position: Annotated[str, "where the lens reads (the last prompt token)"]
    gold: Annotated[str, "how the gold tokens are chosen, rank and probability defined"]
    interval: Annotated[str, "how the intervals were computed"]
    questions_used: Annotated[int, "questions read"]
    skipped_no_position: Annotated[int, "questions whose record lacks the last prompt token"]
    without_gold: Annotated[int, "questions without a gold token (top tokens only, no rank)"]
    vocab_size: Annotated[int, "the unembedding's vocabulary size"]
    chance_rank: Annotated[float, "the rank of a uniform guess: (vocab + 1) / 2"]
    chance_prob_per_token: Annotated[float, "1 / vocab"]
    layer_names: Annotated[list[str], "the layers, in record order"]
    layers: Annotated[dict[str, LensGroups], "per layer, the groups' curves"]
    stratified_by: Annotated[str, "the results field whose values are the strata"]
    stratified_method: Annotated[str, "how the stratified differences were computed"]
    stratified: Annotated[dict[str, LensDifferences], "per layer, incorrect - correct within strata and pooled"]
    questions: Annotated[list[QuestionLens], "every question read"]


CONTRACTS = (LensResult, LensGroups, GroupCurve, LensDifferences, QuestionLens, QuestionLayer)
