"""The probe's verdict in words: the one rendering the text output, the HTML report and the plot title use.

A layer "knows" only where its selectivity (AUROC - the best control's) has an adjusted interval above
0; the verdict names the first such layer, else says there is no evidence beyond the controls, naming
the control no layer could beat ("no evidence beyond the answer-token control" when that control reads
only the answer's own tokens). Its sentence states the evidence (the selectivity and its adjusted
interval, or the best layer's figures) and the baseline it had to beat (the best control, raw or
fitted, and the best control of the other side).

Public names:
    verdict(part) -> Verdict     of a ProbeResult, TestRunResult or ProbeScores
    side_name(part, name) -> str "answer_logprob_mean, output side, raw score"
    NO_EVIDENCE_ANSWER           the headline's start when the best control reads the answer's tokens
    Verdict                      layer (None: no evidence), headline, evidence, baseline; .sentence
    Judged                       what verdict() reads (the protocol the three results share)

Example:
    >>> from activation_eval.analysis.probe.scores import evaluate_scores
    >>> y = np.array([0, 1] * 20)
    >>> P0, P1 = np.full((40, 2), 0.5), np.stack([1 - (y * 0.6 + 0.2), y * 0.6 + 0.2], axis=1)
    >>> v = verdict(evaluate_scores(y, {"layer_0": P0, "layer_1": P1}, {"majority": P0}, 2000, seed=0))
    >>> v.layer, v.headline
    ('layer_1', 'layer_1 is the first layer that beats every control')
    >>> verdict(evaluate_scores(y, {"layer_0": P0}, {"answer_embedding": P1}, 2000, seed=0)).headline
    "no evidence beyond the answer-token control: no layer's adjusted selectivity interval over answer_embedding is above 0"
    >>> headline, baseline = v.sentence.split(" (", 1); baseline
    'best control majority, input side: AUROC 0.500 [0.500, 0.500]; best layer layer_1: AUROC 1.000)'
"""
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import numpy as np  # noqa: F401  (used in the example)

from ...schema.probe import ControlScore, LayerScore
from ..text import with_ci
from .controls import ANSWER_CONTROLS
from .scores import NO_EVIDENCE

NO_EVIDENCE_ANSWER = "no evidence beyond the answer-token control"


class Judged(Protocol):
    """The fields a verdict is read from (ProbeResult, TestRunResult and ProbeScores have them)."""
    @property
    def layers(self) -> Mapping[str, LayerScore]: ...
    @property
    def controls(self) -> Mapping[str, ControlScore]: ...
    @property
    def best_control(self) -> str: ...
    @property
    def best_input_control(self) -> str | None: ...
    @property
    def best_output_control(self) -> str | None: ...
    @property
    def best_layer(self) -> str: ...
    @property
    def verdict(self) -> str: ...


@dataclass(frozen=True)
class Verdict:
    layer: str | None        # the layer named, None: no evidence beyond the controls
    headline: str            # what the verdict says, in one clause
    evidence: str            # the figures behind it
    baseline: str            # the controls it had to beat

    @property
    def sentence(self) -> str:
        """The whole verdict: headline, evidence and baseline."""
        if self.layer is None:
            return f"{self.headline} ({self.evidence}; {self.baseline})"
        return f"{self.headline}: {self.evidence} ({self.baseline})"


def side_name(part: Judged, name: str) -> str:
    """A control's name with its side (and "raw score" for a single score scored raw): "length, input side"."""
    c = part.controls[name]
    return f"{name}, {c.side} side" + (", raw score" if c.scoring == "raw" else "")


def verdict(part: Judged) -> Verdict:
    """The verdict of `part` in words (see the module docstring)."""
    best = part.layers[part.best_layer]
    control = part.controls[part.best_control]
    baseline = f"best control {side_name(part, part.best_control)}: AUROC {with_ci(control.auroc, control.auroc_ci)}"
    for side, name in (("input", part.best_input_control), ("output", part.best_output_control)):
        if name and name != part.best_control and side != control.side and name in part.controls:
            baseline += f"; best {side}-side {name}: {part.controls[name].auroc:.3f}"
    if part.verdict == NO_EVIDENCE or part.verdict not in part.layers:
        start = NO_EVIDENCE_ANSWER if part.best_control in ANSWER_CONTROLS else NO_EVIDENCE
        return Verdict(layer=None, headline=f"{start}: no layer's adjusted selectivity interval over "
                                            f"{part.best_control} is above 0",
                       evidence=f"best layer {part.best_layer}: AUROC {best.auroc:.3f}, selectivity "
                                f"{best.selectivity:+.3f}", baseline=baseline)
    chosen = part.layers[part.verdict]
    return Verdict(layer=part.verdict, headline=f"{part.verdict} is the first layer that beats every control",
                   evidence=f"selectivity {chosen.selectivity:+.3f}, adjusted interval "
                            f"{_interval(chosen.selectivity_ci)}",
                   baseline=f"{baseline}; best layer {part.best_layer}: AUROC {best.auroc:.3f}")


def _interval(ci: tuple[float | None, float | None]) -> str:
    lo, hi = ci
    return "[-]" if lo is None or hi is None else f"[{lo:+.3f}, {hi:+.3f}]"
