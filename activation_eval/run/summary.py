"""main.py's summary.json: its run settings and rows handed to the one summary builder.

Public names:
    make_summary(config, results, elapsed, answered_now, processes=1, rows=(), skipped=()) -> Summary
                          schema/summary.py's build_summary with main.py's metric ("accuracy", by the
                          benchmark's graders), chance baselines and decoding settings

Example (results rows as a run writes them; `rows` are their benchmark rows, 6 geography questions):
    >>> from activation_eval.run.config import RunConfig
    >>> from activation_eval.schema.summary import format_summary
    >>> results = [{"id": row["id"], "category": row["category"], "correct": i < 4} for i, row in enumerate(rows)]
    >>> summary = make_summary(RunConfig(output_dir="results/demo"), results, elapsed=12.0,
    ...                        answered_now=len(results), rows=rows)
    >>> summary["correct"], summary["accuracy_ci95"], summary["producer"]
    (4, [0.300, 0.903], 'main')
    >>> print(format_summary(summary).splitlines()[2])        # the table the CLI prints (schema/summary.py)
    accuracy   66.7% ± 19.2% (SE), 95% CI 30.0%-90.3%, chance 0.0%  (4/6 correct)
"""
from ..eval.scores import chance_accuracy
from ..schema.summary import build_summary
from .config import benchmark_label


def make_summary(config, results, elapsed, answered_now, processes=1, rows=(), skipped=()):
    """summary.json of a main.py run (schema/summary.py): `results` its final rows, `rows` the benchmark
    rows asked (their chance baselines), `skipped` the benchmark rows left out as unusable."""
    return build_summary(
        results, producer="main", model=config.model, benchmark=benchmark_label(config.benchmark),
        output_dir=config.output_dir, chance={row["id"]: chance_accuracy(row) for row in rows},
        skipped=[s["id"] or s["where"] for s in skipped], elapsed=elapsed, answered_now=answered_now,
        processes=processes, capture_activations=config.capture_activations,
        activation_store=config.activation_store, activation_dir=config.activation_save_dir,
        details={"batch_size": config.batch_size, "max_new_tokens": config.max_new_tokens,
                 "mc_scoring": config.mc_scoring, "mc_style": getattr(config, "mc_style", None),
                 "temperature": config.temperature, "num_samples": config.num_samples},
        interventions=config.intervention_entries())
