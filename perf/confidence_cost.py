"""Output confidence and --p_true: what they cost on top of generating the answers (issue 21, item 1).

    PYTHONPATH=. .venv/bin/python perf/confidence_cost.py                 # default model, batch 1 and 8, 7 repeats
    PYTHONPATH=. .venv/bin/python perf/confidence_cost.py --quick         # tiny model, 2 repeats (a smoke run)

Variants, all in one process, interleaved (order rotated every repeat), same prompts and tokens
(the first --batch built-in questions; every call generates exactly --new_tokens tokens per prompt,
eos_token_id=-1, so both variants do the same decode steps):
    off            generate_records(..., GenerationSettings(confidence=False)): the same loop without the
                   figures (continuous.decode's per-step log_softmax, the first token's entropy, the
                   float bits riding in the step's host copy, the records' sums) - the honest baseline
    on             the default: every record with output_logprobs, answer_logprob_mean / _sum, first_token_entropy
    generate_off, generate_on   the same with continuous_batching=False (model.generate; `on` adds
                   output_logits=True and the figures from the stored per-step logits)
    p_true         eval.p_true.p_true_scores on the batch's (question, answer) pairs: what --p_true adds per
                   unit of questions, against `on` (the generation of those answers)
Ratios: on vs off, generate_on vs generate_off, p_true vs on; each the median over repeats of
(variant / baseline in the same repeat), for this process's CPU time (the verdict: one thread, so
other jobs on a shared machine hardly disturb it) and wall time, plus the ratio of the minima.
Accounting (printed first): the figures' own work timed alone over many calls on logits of the
model's vocabulary size - token_logprobs every step, entropy at the prefill - times the calls of
one generate_records call; estimated on/off = 1 + that / off's CPU time.
Writes perf/out/confidence_cost.json; prints the tables last.
"""
import statistics
import sys
import time

import common

BASELINE = {"on": "off", "generate_on": "generate_off", "p_true": "on"}


def main():
    p = common.base_parser(__doc__, repeats=7)
    p.add_argument("--batches", default="1,8", help="prompts per call = batch size (default 1,8)")
    p.add_argument("--new_tokens", type=int, default=32, help="tokens generated per prompt (default 32)")
    p.add_argument("--model", default="default", choices=("default", "tiny"))
    args = p.parse_args()
    if args.quick:
        args.repeats, args.model = min(args.repeats, 2), "tiny"
    torch = common.setup(args.threads)
    from activation_eval.capture import continuous
    from activation_eval.capture.generation import GenerationSettings, generate_records
    from activation_eval.eval.benchmark import load_benchmark
    from activation_eval.eval.p_true import p_true_scores
    from activation_eval.models import load_model

    model, tokenizer = load_model()
    if args.model == "tiny":
        model = common.tiny_llama(tokenizer)
    rows_out, accounts = [], []
    for batch in [int(b) for b in args.batches.split(",")]:
        prompts, questions = common.prompts(batch), [load_benchmark()[i % 122] for i in range(batch)]
        settings = {name: GenerationSettings(max_new_tokens=args.new_tokens, generate_kwargs={"eos_token_id": -1},
                                             confidence=name.endswith("on"),
                                             continuous_batching=not name.startswith("generate"))
                    for name in ("off", "on", "generate_off", "generate_on")}
        recs = {name: generate_records(model, tokenizer, prompts, s, batch_size=batch) for name, s in settings.items()}
        tokens = {name: [r["output_ids"].tolist() for r in rs] for name, rs in recs.items()}
        if len({str(t) for t in tokens.values()}) != 1:
            raise SystemExit("the variants generated different tokens: the comparison would be meaningless")
        responses = [r["response"] for r in recs["on"]]
        variants = {name: (lambda s=s: generate_records(model, tokenizer, prompts, s, batch_size=batch))
                    for name, s in settings.items()}
        variants["p_true"] = lambda: p_true_scores(model, tokenizer, questions, responses, batch_size=batch)
        print(f"{args.model} batch {batch}:", file=sys.stderr)
        wall, cpu = common.interleaved(variants, args.repeats)
        acc = accounting(model, tokenizer, batch, args.new_tokens, continuous, torch)
        acc.update(batch=batch, off_s=statistics.median(cpu["off"]))
        acc["estimated_ratio"] = 1 + acc["extra_s"] / acc["off_s"]
        accounts.append(acc)
        for name in wall:
            base = BASELINE.get(name)
            st = common.stats(wall[name], wall[base] if base else None)
            st.update(common.stats(cpu[name], cpu[base] if base else None, prefix="cpu_"))
            rows_out.append({"model": args.model, "batch": batch, "variant": name, "vs": base, **st})
    path = common.write_json("confidence_cost", {"args": vars(args), "rows": rows_out, "accounting": accounts},
                             args.out)
    print(f"\nwrote {path}\n")
    print("accounting: the figures' own work, timed alone (median of many calls), times the calls of one generate")
    print(common.table(accounts, [("batch", "batch", "d"), ("steps", "decode steps", "d"),
                                  ("logprob_us", "us/step logprob", ".1f"), ("entropy_us", "us/prefill entropy", ".1f"),
                                  ("extra_s", "extra s", ".5f"), ("off_s", "off CPU s", ".3f"),
                                  ("estimated_ratio", "on/off", ".4f")]))
    print()
    print(f"measured: variants interleaved, {args.repeats} repeats, CPU time of this process (and wall)")
    print(common.table(rows_out, [("model", "model", ""), ("batch", "batch", "d"), ("variant", "variant", ""),
                                  ("cpu_median_s", "CPU median s", ".3f"), ("cpu_min_s", "CPU min s", ".3f"),
                                  ("vs", "vs", ""), ("cpu_paired_ratio", "CPU ratio", ".3f"),
                                  ("cpu_ratio_of_mins", "CPU min ratio", ".3f"), ("median_s", "wall median s", ".3f"),
                                  ("paired_ratio", "wall ratio", ".3f")]))


def accounting(model, tokenizer, batch, new_tokens, continuous, torch, calls=200):
    """The per-step and per-prefill confidence work on (batch, vocab) float32 logits, timed alone."""
    vocab = model.get_output_embeddings().weight.shape[0]
    logits = torch.randn(batch, vocab, generator=torch.Generator().manual_seed(0))
    tokens = logits.argmax(-1)

    def per_call(fn):
        start = time.process_time()
        for _ in range(calls):
            fn()
        return (time.process_time() - start) / calls
    logprob_s = statistics.median(per_call(lambda: continuous.token_logprobs(logits, tokens)) for _ in range(5))
    entropy_s = statistics.median(per_call(lambda: continuous.entropy(logits)) for _ in range(5))
    steps = new_tokens                          # the prefill and new_tokens - 1 one-token steps each pick a token
    return {"steps": steps, "logprob_us": logprob_s * 1e6, "entropy_us": entropy_s * 1e6,
            "extra_s": steps * logprob_s + entropy_s}


if __name__ == "__main__":
    main()
