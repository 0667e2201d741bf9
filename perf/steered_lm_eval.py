"""A steered lm-eval run on a local task: lm-eval's multiple-choice scoring of the built-in benchmark's
36 choice questions with the default model, plain and steered along the default run's mass-mean
direction (correct minus incorrect at the probe's position) at +-ALPHA spreads, through the
activation-eval backend's model_args (steer, steer_layer, steer_alpha).

    .venv/bin/python perf/steered_lm_eval.py results/<default run>           # layer_20, +-1 spread
    .venv/bin/python perf/steered_lm_eval.py results/<run> --layer layer_12 --alpha 2

Prints, per condition, lm-eval's acc and acc_norm with their standard errors, the mean log-likelihood
of the gold choice (lm-eval's own per-request figure), and what the run folder's run_config.json says
(the intervention entry). Writes perf/out/steered_lm_eval.json. The task is written to a temporary
folder (a local YAML task over a JSONL file); nothing is downloaded.
"""
import json
import os
import tempfile
import time

import common

YAML = """task: builtin_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {folder}/mc.jsonl
test_split: test
output_type: multiple_choice
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_target: label
doc_to_choice: choices
metric_list:
  - metric: acc
  - metric: acc_norm
"""


def local_task(folder):
    from activation_eval.eval.benchmark import load_benchmark
    rows = [r for r in load_benchmark() if r.get("choices")]
    letters = "ABCDEFGH"
    with open(os.path.join(folder, "mc.jsonl"), "w") as f:
        for r in rows:
            label = letters.index(r["answer"][0] if isinstance(r["answer"], list) else r["answer"])
            f.write(json.dumps({"question": r["question"], "choices": r["choices"], "label": label}) + "\n")
    with open(os.path.join(folder, "builtin_mc.yaml"), "w") as f:
        f.write(YAML.format(folder=folder))
    return len(rows)


def main():
    p = common.base_parser(__doc__, repeats=1)
    p.add_argument("run", help="the default run folder (main.py --capture_activations --positions answer)")
    p.add_argument("--layer", default="layer_20")
    p.add_argument("--alpha", type=float, default=1.0, help="spreads of the residual along the direction (default 1)")
    args = p.parse_args()
    common.setup(args.threads)
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    import numpy as np
    from lm_eval.tasks import TaskManager

    import activation_eval.harness as harness
    from activation_eval.analysis.causal import mass_mean, spread
    from activation_eval.analysis.dataset import load_run_layer, resolve_reduce
    from activation_eval.models import DEFAULT_MODEL
    from activation_eval.store.directions import save_direction
    tmp = tempfile.mkdtemp(prefix="steered_lm_eval_")
    n_docs = local_task(tmp)
    position, _ = resolve_reduce(args.run, "auto")
    X, rows = load_run_layer(args.run, args.layer, reduce=position)
    y = np.array([bool(r["correct"]) for r in rows], dtype=int)
    u = mass_mean(X, y)
    width = spread(X, u)
    path = save_direction(os.path.join(tmp, "direction.safetensors"), u, source=f"{args.run}: mass_mean at "
                          f"{args.layer}, {position}")
    table = []
    for name, alpha in (("plain", None), (f"+{args.alpha:g} sd", args.alpha * width),
                        (f"-{args.alpha:g} sd", -args.alpha * width)):
        out = os.path.join(tmp, name.replace(" ", "_").replace("+", "p").replace("-", "m"))
        model_args = {"pretrained": DEFAULT_MODEL, "output_dir": out, "capture_activations": False}
        if alpha is not None:
            model_args.update(steer=path, steer_layer=args.layer, steer_alpha=alpha)
        start = time.perf_counter()
        res = harness.simple_evaluate(model="activation-eval", model_args=model_args, tasks=["builtin_mc"],
                                      task_manager=TaskManager(include_path=tmp, include_defaults=False),
                                      log_samples=True, batch_size=8, device="cpu", bootstrap_iters=1000)
        wall = time.perf_counter() - start
        metrics = res["results"]["builtin_mc"]
        samples = res["samples"]["builtin_mc"]
        gold_ll = float(np.mean([s["resps"][s["target"]][0][0] for s in samples]))
        with open(os.path.join(out, "run_config.json")) as f:
            entries = json.load(f)["interventions"]
        table.append({"condition": name, "alpha": alpha, "acc": metrics["acc,none"],
                      "acc_se": metrics["acc_stderr,none"], "acc_norm": metrics["acc_norm,none"],
                      "acc_norm_se": metrics["acc_norm_stderr,none"], "gold_ll": gold_ll, "wall": wall,
                      "entry": (f"{entries[0]['kind']} {entries[0]['layer']} alpha {entries[0]['alpha']:.3g} "
                                f"sha {entries[0]['direction_sha256'][:8]}") if entries else "[] (plain)"})
    print(f"{DEFAULT_MODEL}, local task builtin_mc ({n_docs} documents), direction: mass_mean of {args.run} at "
          f"{args.layer} ({position}), spread {width:.3f}")
    print(common.table(table, [("condition", "condition", ""), ("acc", "acc", ".3f"), ("acc_se", "+-SE", ".3f"),
                               ("acc_norm", "acc_norm", ".3f"), ("acc_norm_se", "+-SE", ".3f"),
                               ("gold_ll", "mean gold log-lik", ".3f"), ("wall", "wall s", ".1f"),
                               ("entry", "run_config.json interventions", "")]))
    common.write_json("steered_lm_eval", {"args": vars(args), "rows": table, "n_docs": n_docs})


if __name__ == "__main__":
    main()
