"""The causal verdict and its one sentence (the text output, the HTML report and the plot title use it).

"causal" only when, at the test alpha, the direction's effect (by default the mean change in the gold
answer's log-likelihood; antisymmetric: half the difference between the effects at +alpha and -alpha, so
that the damage any perturbation of that norm does cancels and a random direction's effect is symmetric
about 0 by construction) is
  - beyond the random band: |effect| > the 95th percentile of |effect| over the random directions of the
    same norm (numpy's "higher" percentile: an observed value, the largest one for fewer than 20
    directions, so a direction no better than random passes it with probability at most 1 / (K + 1),
    which is <= 5% from K = 19 random directions on);
  - its paired interval excludes 0;
  - and the effects at +alpha and -alpha are non-zero and of opposite signs (the sign flip reverses it).
Otherwise "no causal evidence at this layer", naming what failed and the best random direction's effect.

Public names:
    judge(effect, effect_ci, test_effect, sign_flip_effect, random_effects, test_alpha_sd=4.0,
          measure="gold_logprob_change", antisymmetric=True) -> Judgement
    Judgement        verdict, text, random_p95, best_random, best_random_effect, beyond_band, excludes_zero,
                     sign_flip_reverses, notes
    random_band(random_effects) -> (p95, best name, best effect)
    MIN_RANDOM       19: fewer random directions cannot hold the band to 5%

Example:
    >>> j = judge(0.9, (0.6, 1.2), 0.5, -1.3, {"random_cov_0": 0.05, "random_iso_0": -0.12})
    >>> j.verdict
    'causal'
    >>> import textwrap; print(textwrap.fill(j.text, 110))
    causal: steering along the direction at +/-4 sd moves the gold log-likelihood by +0.900 [+0.600, +1.200] (half
    the difference between +0.500 at +4 sd and -1.300 at -4 sd), beyond the random band (95th percentile of
    |effect| 0.120 over 2 random directions; best random_iso_0: -0.120), and the sign flip reverses it
    >>> judge(0.1, (-0.1, 0.3), 0.1, -0.1, {"random_cov_0": 0.3}).text.split(":")[0]
    'no causal evidence at this layer'
"""
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from ...schema.causal import CAUSAL, NO_CAUSAL_EVIDENCE
from ...schema.estimates import Interval

MIN_RANDOM = 19
_MEASURE_WORDS = {"gold_logprob_change": "the gold log-likelihood", "accuracy_change": "accuracy"}


@dataclass(frozen=True)
class Judgement:
    """The verdict with what it was read from."""
    verdict: str
    text: str
    random_p95: float | None
    best_random: str | None
    best_random_effect: float | None
    beyond_band: bool
    excludes_zero: bool
    sign_flip_reverses: bool
    notes: list[str] = field(default_factory=list)


def random_band(random_effects: Mapping[str, float]) -> tuple[float | None, str | None, float | None]:
    """The 95th percentile of |effect| over the random directions ("higher": an observed value), and the
    random direction with the largest |effect| with its effect; Nones when there is none."""
    finite = {k: float(v) for k, v in random_effects.items() if v is not None and np.isfinite(v)}
    if not finite:
        return None, None, None
    p95 = float(np.percentile(np.abs(list(finite.values())), 95, method="higher"))
    best = max(finite, key=lambda k: abs(finite[k]))
    return p95, best, finite[best]


def _signed(x: float | None) -> str:
    return "n/a" if x is None else f"{x:+.3f}"


def _band_words(p95: float | None, k: int, best: str | None, best_effect: float | None) -> str:
    if p95 is None:
        return "no random direction to compare with"
    return (f"95th percentile of |effect| {p95:.3f} over {k} random direction{'s' if k != 1 else ''}; "
            f"best {best}: {_signed(best_effect)}")


def _sentence(verdict: str, effect: float | None, ci: Interval, test: float | None, flip: float | None, band: str,
              test_alpha_sd: float, measure: str, antisymmetric: bool, failed: list[str]) -> str:
    """The one sentence of the verdict."""
    what = _MEASURE_WORDS.get(measure, measure)
    shown = f"{_signed(effect)} [{_signed(ci[0])}, {_signed(ci[1])}]"
    a = abs(test_alpha_sd)
    if antisymmetric:
        head = (f"steering along the direction at +/-{a:g} sd moves {what} by {shown} (half the difference between "
                f"{_signed(test)} at +{a:g} sd and {_signed(flip)} at -{a:g} sd)")
    else:
        head = (f"steering along the direction at +{a:g} sd changes {what} by {shown} "
                f"({_signed(flip)} at -{a:g} sd)")
    if verdict == CAUSAL:
        return f"{CAUSAL}: {head}, beyond the random band ({band}), and the sign flip reverses it"
    return f"{NO_CAUSAL_EVIDENCE}: {head}, but {' and '.join(failed)} ({band})"


def judge(effect: float | None, effect_ci: Interval, test_effect: float | None, sign_flip_effect: float | None,
          random_effects: Mapping[str, float], test_alpha_sd: float = 4.0, measure: str = "gold_logprob_change",
          antisymmetric: bool = True) -> Judgement:
    """The verdict of a direction from its effect (antisymmetric or at +alpha), its interval, the effects at
    +test alpha and at -test alpha (the sign flip), and the random directions' effects (name -> effect,
    defined as the direction's, at the test alpha's norm)."""
    p95, best, best_effect = random_band(random_effects)
    k = sum(1 for v in random_effects.values() if v is not None and np.isfinite(v))
    notes = []
    if k < MIN_RANDOM:
        notes.append(f"only {k} random directions: a direction no better than random passes the band with "
                     f"probability up to 1/{k + 1}; use at least {MIN_RANDOM} to hold it to 5%")
    have = effect is not None and bool(np.isfinite(effect))
    beyond = bool(effect is not None and have and p95 is not None and abs(effect) > p95)
    lo, hi = effect_ci
    excludes = bool(lo is not None and hi is not None and (lo > 0 or hi < 0))
    reverses = bool(test_effect is not None and sign_flip_effect is not None and np.isfinite(test_effect)
                    and np.isfinite(sign_flip_effect) and test_effect != 0 and sign_flip_effect != 0
                    and np.sign(sign_flip_effect) == -np.sign(test_effect))
    failed = []
    if not have:
        failed.append("the effect could not be measured")
    elif p95 is None:
        failed.append("no random direction ran to compare with")
    elif not beyond:
        failed.append("it lies within the random band")
    if have and not excludes:
        failed.append("its interval includes 0")
    if not reverses:
        failed.append("the sign flip does not reverse it")
    verdict = CAUSAL if not failed else NO_CAUSAL_EVIDENCE
    text = _sentence(verdict, effect, effect_ci, test_effect, sign_flip_effect, _band_words(p95, k, best, best_effect),
                     test_alpha_sd, measure, antisymmetric, failed)
    return Judgement(verdict=verdict, text=text, random_p95=p95, best_random=best, best_random_effect=best_effect,
                     beyond_band=beyond, excludes_zero=excludes, sign_flip_reverses=reverses, notes=notes)
