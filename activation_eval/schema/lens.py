"""The logit lens result: what every captured layer would predict as the answer's first token.

analysis/lens/ builds it (logit_lens_run); the --json output of `analyze_activations.py --logit_lens`
is this result, its fields as keys, plus "format_version" (and "plots"). Each layer's activation at
the position that emits the extracted answer's first token (reading "answer": the position before the
answer span's first token; reading "last_prompt": the last prompt token) goes through the model's
final norm and unembedding; ranks run from 1 (top) to the vocabulary size.

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
    (12.0, 2)
"""
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar

from .estimates import Interval
from .stratify import Difference

FORMAT_VERSION = 2     # 2: the lens reads at the answer (reading, position, caveats, skipped_no_answer_span)


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
    generated_rank: Annotated[int | None, "the rank of the token the model generated from the position read "
                                           "(None: nothing generated there)"]


@dataclass(frozen=True, kw_only=True)
class QuestionLens:
    """The lens on one question."""
    id: Annotated[Any, "the question's id (its results row's)"]
    category: Annotated[Any, "its category"]
    correct: Annotated[bool | None, "its verdict"]
    gold_token_ids: Annotated[list[int], "candidate first tokens of the gold answer (with and without a leading space)"]
    gold_tokens: Annotated[list[str], "those tokens as text"]
    position: Annotated[int, "the absolute token position read (its activation predicts token position + 1)"]
    answer_start: Annotated[int | None, "the answer span's first token position (None: reading last_prompt)"]
    at_last_prompt: Annotated[bool, "the position read is the last prompt token (reading answer: the answer opens "
                                    "the response)"]
    next_token: Annotated[str | None, "the token the model generated from the position read, as text (reading "
                                      "answer: the extracted answer's first token)"]
    layers: Annotated[dict[str, QuestionLayer], "per layer"]


@dataclass(frozen=True, kw_only=True)
class LensResult:
    """The logit lens of a run: per layer, the gold first token's rank and probability, by group and
    within strata, and every question's figures."""
    format_version: ClassVar[int] = FORMAT_VERSION
    run_dir: Annotated[str, "the run folder"]
    model: Annotated[str, "the model whose final norm and unembedding were used"]
    reading: Annotated[str, "answer: the position that emits the extracted answer's first token; last_prompt: the "
                            "last prompt token (the pre-issue-27 reading)"]
    position: Annotated[str, "where the lens reads, in words (how the reading was chosen)"]
    gold: Annotated[str, "how the gold tokens are chosen, rank and probability defined"]
    interval: Annotated[str, "how the intervals were computed"]
    questions_used: Annotated[int, "questions read"]
    skipped_no_answer_span: Annotated[int, "questions left out (reading answer): no answer_positions, or the "
                                           "extracted answer not found in the response"]
    skipped_no_position: Annotated[int, "questions whose record lacks the position to read"]
    at_response_start: Annotated[dict[str, int], "questions read at the last prompt token (their answer is the "
                                                  "response's first token), per group: correct, incorrect"]
    min_per_class: Annotated[int, "fewer correct or incorrect questions than this puts a caveat on the comparison"]
    caveats: Annotated[list[str], "what limits the correct-vs-incorrect comparison (few rows, groups read at "
                                  "different kinds of position, the last-prompt reading); [] when none"]
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
