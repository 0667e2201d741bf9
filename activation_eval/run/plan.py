"""The plan of a run: which questions it answers, and their split into units.

Public names:
    select_rows(rows, config, warn=True)       the questions a run answers (--mc_scoring, --limit, --shuffle)
    refused_rows(rows, config) -> [{"id", "where", "reason"}]   rows --mc_scoring loglikelihood cannot score
    with_samples(rows, num_samples)            one planned answer per (question, sample)
    unit_size(model, tokenizer, settings, batch_size, unit_batches=1)   questions per planned unit
    plan_batches(rows, tokenizer, chat_template, batch_size, lengths=None, system_prompt=None)
                                               units of rows with similar prompt lengths
    batch_key(unit)                            the unit's key (hex), kept in each of its rows as "unit"
    unfinished(units, stored)                  the units that still need answering

Example:
    >>> units = plan_batches(rows, tok, "auto", 4)               # 6 benchmark rows, batches of 4
    >>> [[row["id"] for row in unit] for unit in units]
    [['geo-001', 'geo-002', 'geo-003', 'geo-004'], ['geo-005', 'geo-006']]
    >>> keys = [batch_key(unit) for unit in units]
    >>> stored_rows = [dict(row, unit=keys[0]) for row in units[0]]     # as if the first unit were answered
    >>> todo = unfinished(units, {schema.row_key(r): schema.row_unit(r) for r in stored_rows})
    >>> [batch_key(unit) for unit in todo] == keys[1:]
    True

Float results depend on which questions share a forward pass, so a unit is answered whole, by one
process, and each row keeps the unit's key: --resume re-answers a unit unless all its rows carry
its key (see runner.py's "Batches").
"""
import hashlib
import logging
import math
import random

from .. import schema
from ..capture.generation import decoding_mode, prompt_lengths
from ..eval.multiple_choice import has_choices, refusal
from ..eval.prompts import prompt_of
from .config import RunError

log = logging.getLogger(__name__)


def plan_batches(rows, tokenizer, chat_template, batch_size, lengths=None, system_prompt=None):
    """Batches of rows with similar prompt lengths, so little compute goes to padding
    (`lengths`: the rows' prompt token counts, if already known)."""
    if lengths is None:
        lengths = prompt_lengths(tokenizer, [prompt_of(r) for r in rows], chat_template, system_prompt)
    order = sorted(range(len(rows)), key=lambda i: (lengths[i], i))
    return [[rows[i] for i in order[s:s + batch_size]] for s in range(0, len(order), batch_size)]


def unit_size(model, tokenizer, settings, batch_size, unit_batches=1):
    """Questions per planned unit: `batch_size` for model.generate batches; with continuous batching
    (batch_size rows decode at once, a finished row is refilled from the unit) `unit_batches` times as
    many: 1 (the default) keeps only the questions in flight at risk of an interruption, more spend
    less time in units' last, emptying steps (perf/unit_size.py)."""
    continuous = decoding_mode(model, tokenizer, settings)[0] == "continuous"
    return batch_size * unit_batches if continuous else batch_size


def batch_key(batch):
    """A short name for a batch's composition (its question ids and samples, in order), kept in each of its rows."""
    ids = "\x1f".join(str(row["id"]) if row.get("sample") is None else f"{row['id']}\x1e{row['sample']}"
                      for row in batch)
    return hashlib.sha256(ids.encode("utf-8")).hexdigest()[:12]


def unfinished(batches, stored):
    """The batches that still need answering: some row is missing or was answered in another batch
    (`stored`: {row_key: batch key} of the rows written)."""
    return [b for b in batches if any(stored.get(schema.row_key(row)) != batch_key(b) for row in b)]


def refused_rows(rows, config):
    """The rows with choices that --mc_scoring loglikelihood refuses (several accepted letters: see
    eval/multiple_choice.refusal), as the benchmark's skipped rows are listed: [{"id", "where", "reason"}]."""
    if config.mc_scoring != "loglikelihood":
        return []
    reasons = ((row, refusal(row)) for row in rows if has_choices(row))
    return [{"id": row["id"], "where": f"row {row['id']}", "reason": reason} for row, reason in reasons if reason]


def select_rows(rows, config, warn=True):
    """The questions the run answers: with --mc_scoring loglikelihood only rows with choices
    (the others skipped with a warning) and one accepted letter (the others skipped with a warning
    naming them, and counted as skipped rows; --strict: an error); then --limit N or a fraction, the
    first ones or, with --shuffle, a subset drawn with --seed (kept in benchmark order); then, when
    config.question_ids is set (code only), those questions alone (an id the benchmark lacks: an error)."""
    if config.mc_scoring == "loglikelihood":
        refused = refused_rows(rows, config)
        if refused and config.strict:
            raise RunError(f"--mc_scoring loglikelihood --strict: {refused[0]['reason']}"
                           + (f" ({len(refused) - 1} more such rows)" if len(refused) > 1 else ""))
        if refused and warn:
            for item in refused:
                log.warning("--mc_scoring loglikelihood: skipping %s (--strict makes this an error)", item["reason"])
        ids = {item["id"] for item in refused}
        rows = [row for row in rows if row["id"] not in ids]
        skipped = [row["id"] for row in rows if not has_choices(row)]
        rows = [row for row in rows if has_choices(row)]
        if skipped and warn:
            log.warning("--mc_scoring loglikelihood: skipping %d row(s) without choices (%s%s)", len(skipped),
                        ", ".join(map(str, skipped[:5])), ", ..." if len(skipped) > 5 else "")
        if not rows:
            raise RunError(f"--mc_scoring loglikelihood: no row of {config.benchmark} has choices "
                           f"(--choices_field {config.choices_field!r}); use --mc_scoring generate")
    rows = _limited(rows, config)
    if config.question_ids is None:
        return rows
    wanted = set(config.question_ids)
    missing = wanted - {str(row["id"]) for row in rows}
    if missing:
        raise RunError(f"{len(missing)} question id(s) to answer are not among the benchmark's selected rows, "
                       f"e.g. {sorted(missing)[0]!r}: was the benchmark file changed?")
    return [row for row in rows if str(row["id"]) in wanted]


def _limited(rows, config):
    if config.limit is None:
        return rows
    n = config.limit if isinstance(config.limit, int) else math.ceil(config.limit * len(rows))
    if not config.shuffle:
        return rows[:n]
    chosen = sorted(random.Random(config.seed).sample(range(len(rows)), min(n, len(rows))))
    return [rows[i] for i in chosen]


def with_samples(rows, num_samples):
    """The planned answers: each row once, or with num_samples > 1 each row num_samples times as
    copies with a `sample` index (0 .. N-1)."""
    if num_samples == 1:
        return list(rows)
    return [{**row, "sample": k} for row in rows for k in range(num_samples)]
