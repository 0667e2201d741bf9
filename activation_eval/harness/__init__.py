"""lm-evaluation-harness with activation capture: lm-eval's `hf` backend, its tasks and scoring,
plus this project's run folder (rows, records, summary) that every analysis mode reads.

Importing this package imports lm-eval and registers the model "activation-eval" in lm-eval's
registry (nothing else in activation_eval imports lm-eval). The Inspect AI provider lives here too
(inspect_provider.py, its run folder inspect_run.py); Inspect finds it through the light entry
point activation_eval/inspect_registry.py. `python -m activation_eval.harness` is the
`activation-eval-lm-eval` command (for launchers: torchrun / accelerate launch -m ...).

Public names:
    ActivationEvalLM         the model class (lm_eval_model.py): HFLM + ActivationCapture
    simple_evaluate(**kw)    lm_eval.simple_evaluate that also writes the run folder (cli.py)
    write_run(results, lm=None)  write the run folder after a plain lm_eval.simple_evaluate
    console_main()           the `activation-eval-lm-eval` command: lm-eval's CLI with the model

Example (a local model folder and a local task: tasks/tiny_mc.yaml, 8 multiple-choice questions):
    >>> import activation_eval.harness as harness
    >>> from lm_eval.tasks import TaskManager
    >>> results = harness.simple_evaluate(model="activation-eval", tasks=["tiny_mc"], device="cpu", batch_size=8,
    ...     task_manager=TaskManager(include_path="tasks", include_defaults=False),   # or lm-eval's: tasks=["arc_easy"]
    ...     model_args={"pretrained": "models/tiny-llama", "output_dir": "runs/mc", "layers": [0, -1]})
    >>> 0 <= results["results"]["tiny_mc"]["acc,none"] <= 1                # lm-eval's own results
    True
    >>> from activation_eval.store.run_reader import RunReader
    >>> reader = RunReader("runs/mc")                                      # and the run folder
    >>> [row["id"] for row in reader.rows][:3], len(reader.rows)
    (['tiny_mc/0', 'tiny_mc/1', 'tiny_mc/2'], 8)
    >>> # or: results = lm_eval.simple_evaluate(model="activation-eval", ...); harness.write_run(results)
    $ activation-eval-lm-eval run --model activation-eval --tasks arc_easy \\
        --model_args pretrained=gpt2,output_dir=runs/arc,layers=[0,-1],activation_store=shards
"""
from .cli import console_main, simple_evaluate, write_run
from .lm_eval_model import MODEL_NAME, ActivationEvalLM

__all__ = ["MODEL_NAME", "ActivationEvalLM", "console_main", "simple_evaluate", "write_run"]
