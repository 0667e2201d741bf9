"""lm-eval's own command line and simple_evaluate, with the run folder written at the end.

Public names:
    simple_evaluate(**kwargs)    lm_eval.simple_evaluate (same arguments, same results), and when the
                                 model is "activation-eval" the run folder at its output_dir
    write_run(results, lm=None)  the run folder of a finished lm_eval.simple_evaluate(log_samples=True)
    console_main()               `activation-eval-lm-eval`: lm-eval's CLI, every flag of it

Example:
    $ activation-eval-lm-eval run --model activation-eval --tasks hellaswag --limit 50 \\
        --model_args pretrained=gpt2,dtype=float32,output_dir=runs/hs,layers=[0,-1] --output_path out/

The run folder needs each document's metrics, which lm-eval returns only as samples: our
simple_evaluate asks lm-eval for them (log_samples=True) and removes them from the results again
when the caller did not ask for them, so lm-eval's output (results JSON, and samples with
--log_samples) is what lm-eval alone writes.
"""
import os
import sys

from lm_eval import evaluator
from lm_eval.utils import simple_parse_args_string

from ..store.errors import RunFolderError
from .lm_eval_model import MODEL_NAME, UNWRITTEN, ActivationEvalLM


def simple_evaluate(**kwargs):
    """lm_eval.simple_evaluate(**kwargs); with the model "activation-eval" (or an ActivationEvalLM)
    the run folder is written too (several processes: each its own documents, process 0 the rest;
    lm-eval's results come back on process 0 only, None elsewhere)."""
    model = kwargs.get("model")
    ours = model == MODEL_NAME or isinstance(model, ActivationEvalLM)
    if not ours:
        return evaluator.simple_evaluate(**kwargs)
    wanted = kwargs.get("log_samples", True)
    before = dict(UNWRITTEN)
    results = evaluator.simple_evaluate(**{**kwargs, "log_samples": True})
    lm = model if isinstance(model, ActivationEvalLM) else _newest(before)
    if results is not None or lm.world_size > 1:        # several processes: each writes its own documents
        lm.write_run(results)
    if results is not None and not wanted:
        results.pop("samples", None)
    return results


def _newest(before):
    made = [lm for key, lm in UNWRITTEN.items() if before.get(key) is not lm]
    if len(made) != 1:
        raise RuntimeError(f"expected lm-eval to build one {MODEL_NAME} model, found {len(made)}")
    return made[0]


def write_run(results, lm=None):
    """Write the run folder of `results` (lm_eval.simple_evaluate(..., log_samples=True) with the
    model "activation-eval"): `lm` the model, or found by results' output_dir among live ones."""
    if lm is None:
        args = (results.get("config") or {}).get("model_args") or {}
        args = simple_parse_args_string(args) if isinstance(args, str) else args
        out = args.get("output_dir")
        lm = UNWRITTEN.get(os.path.realpath(out)) if isinstance(out, str) else None
        if lm is None:
            raise ValueError(f"no {MODEL_NAME} model of these results (output_dir {out!r}) has a run folder "
                             f"left to write; pass the model: write_run(results, lm)")
    return lm.write_run(results)


def console_main(argv=None):
    """lm-eval's CLI (`lm-eval run ...`, `ls`, `validate`) with "activation-eval" registered and
    its run folder written after an evaluation."""
    import lm_eval
    from lm_eval.__main__ import cli_evaluate
    if argv is not None:
        sys.argv = [sys.argv[0], *argv]
    # lm-eval's `run` command looks simple_evaluate up on the lm_eval package when it runs; in this
    # process (our command's own) it finds ours, which calls lm-eval's and then writes the run folder
    original = lm_eval.__dict__.get("simple_evaluate")
    lm_eval.simple_evaluate = simple_evaluate
    try:
        cli_evaluate()
    except RunFolderError as exc:          # a folder refused, a bad model_arg: one line, nothing written
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        sys.exit(2)
    finally:
        if original is None:
            del lm_eval.simple_evaluate
        else:
            lm_eval.simple_evaluate = original
