"""Intervention overhead: what steering (or ablating) one layer while answering costs on top of plain
generation (issue 28's target: at most 2% at batch 1 and 8, CPU).

    .venv/bin/python perf/intervention_overhead.py                  # default model, batch 1 and 8, 5 repeats
    .venv/bin/python perf/intervention_overhead.py --prompts 16 --new_tokens 32 --repeats 7

Variants, one process, interleaved (order rotated every repeat), the same prompts:
    plain     generation.generate_records without interventions (continuous batching, greedy)
    steer     the same with steer(u, middle layer, alpha 4.0) at every position
    ablate    the same with ablate(u, middle layer) at every position
Every call generates exactly --new_tokens tokens per prompt (eos_token_id=-1): a steered answer
that would stop at another length does not change the work compared. Ratios are the median over
repeats of (variant CPU s / plain CPU s of that repeat), this process's CPU time (--threads 1:
equal to wall time on an idle machine, much less disturbed by other jobs on a shared one).
Writes perf/out/intervention_overhead.json; prints the table last.
"""
import common


def main():
    p = common.base_parser(__doc__, repeats=5)
    p.add_argument("--prompts", type=int, default=16, help="questions per call (default 16)")
    p.add_argument("--new_tokens", type=int, default=32, help="tokens generated per answer (default 32)")
    p.add_argument("--batch_sizes", default="1,8", help="comma list (default 1,8)")
    args = p.parse_args()
    torch = common.setup(args.threads)
    from activation_eval.capture.generation import GenerationSettings, generate_records
    from activation_eval.capture.intervene import ablate, steer
    from activation_eval.models import DEFAULT_MODEL, load_model
    model, tok = load_model(DEFAULT_MODEL)
    n = 4 if args.quick else args.prompts
    prompts = common.prompts(n)
    layer = model.config.num_hidden_layers // 2
    u = torch.randn(model.config.hidden_size, generator=torch.Generator().manual_seed(0))
    kinds = {"plain": (), "steer": (steer(u, layer, 4.0),), "ablate": (ablate(u, layer),)}
    rows, raw = [], {}
    for batch in [int(b) for b in args.batch_sizes.split(",")]:
        def variant(interventions, batch=batch):
            settings = GenerationSettings(max_new_tokens=args.new_tokens, generate_kwargs={"eos_token_id": -1},
                                          interventions=interventions)
            return lambda: generate_records(model, tok, prompts, settings, batch_size=batch)
        walls, cpus = common.interleaved({name: variant(items) for name, items in kinds.items()},
                                         1 if args.quick else args.repeats)
        raw[batch] = {"wall": walls, "cpu": cpus}
        for name in kinds:
            s = common.stats(cpus[name], cpus["plain"])
            w = common.stats(walls[name], walls["plain"])
            rows.append({"batch": batch, "variant": name, "cpu": s["median_s"], "ratio": s["paired_ratio"],
                         "wall_ratio": w["paired_ratio"],
                         "verdict": common.verdict(s["paired_ratio"], 1.02) if name != "plain" else ""})
    print(f"default model {DEFAULT_MODEL}, {n} prompts x {args.new_tokens} tokens, layer_{layer}, "
          f"{args.repeats} repeats, {torch.get_num_threads()} thread(s)")
    print(common.table(rows, [("batch", "batch", ""), ("variant", "variant", ""), ("cpu", "median CPU s", ".2f"),
                              ("ratio", "CPU vs plain (paired median)", ".3f"),
                              ("wall_ratio", "wall vs plain", ".3f"), ("verdict", "target <= 1.02", "")]))
    common.write_json("intervention_overhead", {"args": vars(args), "layer": layer, "rows": rows, "raw": raw})


if __name__ == "__main__":
    main()
