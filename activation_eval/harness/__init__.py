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

Example:
    >>> import activation_eval.harness as harness
    >>> results = harness.simple_evaluate(model="activation-eval", tasks=["arc_easy"], limit=20,
    ...     model_args={"pretrained": "gpt2", "output_dir": "runs/arc", "layers": [0, -1]})
    >>> # or: results = lm_eval.simple_evaluate(model="activation-eval", ...); harness.write_run(results)
    $ activation-eval-lm-eval run --model activation-eval --tasks arc_easy \\
        --model_args pretrained=gpt2,output_dir=runs/arc,layers=[0,-1],activation_store=shards
"""
from .cli import console_main, simple_evaluate, write_run
from .lm_eval_model import MODEL_NAME, ActivationEvalLM

__all__ = ["MODEL_NAME", "ActivationEvalLM", "console_main", "simple_evaluate", "write_run"]
