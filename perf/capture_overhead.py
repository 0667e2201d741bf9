"""Capture overhead: what capturing every layer at every position costs on top of generation.

    .venv/bin/python perf/capture_overhead.py                  # default + tiny model, batch 1 and 8
    .venv/bin/python perf/capture_overhead.py --models tiny --repeats 9 --threads 2

Variants, all in one process, interleaved (order rotated every repeat), same prompts and tokens:
    raw            model.generate on the already tokenized batch (the floor)
    plain          generation.generate_records(..., capture=None): the project's plain generation
                   (tokenizing, continuous.decode, cutting at EOS, decoding, building records)
    capture        generate_records with CaptureSettings(): embeddings + every decoder layer, all
                   positions, records with their activations (what main.py --capture_activations does
                   before saving)
    plain_generate, capture_generate   the same with continuous_batching=False: model.generate
                   under ActivationCapture (the path for sampling and other generate() arguments)
    hooks          raw generate inside ActivationCapture (hooks only, no record assembly): diagnostic
    hidden_states  model.generate(output_hidden_states=True, return_dict_in_generate=True): the
                   transformers built-in, for reference
Every call generates exactly --new_tokens tokens per prompt: generate gets eos_token_id=-1, so no
row stops early (a min_new_tokens logits processor would add a per-step vocab-wide isin that
dilutes the ratios). Records are still cut at the tokenizer's EOS, as in a real batch where some
rows finish first; the hooks buffer and concatenate all steps regardless. Ratios: capture vs plain, every
other variant vs raw; a ratio is the median over repeats of (variant / baseline of that repeat),
for wall time and for this process's CPU time. Verdicts use the CPU ratio: with --threads 1 it
equals wall time on an idle machine and is far less disturbed by other jobs on a shared one.
Accounting (printed first): on a shared 2-core machine the interleaved timings scatter by +-10-40%,
more than the few percent being judged, so capture's extra work is also timed part by part, each
part alone over many calls. model.generate path: the cost of one hook call (torch's hooked
module-call path + our hook) times the hook calls in one generate, plus building the records with
activations minus building them without (same generate output). Continuous path: one decode-step
hook call times the step hook calls, plus RowCapture's prompt copies, routing and per-question
assembly timed method by method inside real calls, plus building the RowCapture.
estimated capture/plain = 1 + (those parts) / plain CPU time. Likewise the wrapper: tokenizing the prompts +
building records without activations, timed alone; estimated plain/raw = plain / (plain - wrapper).
Targets (CPU, default model): capture <= 1.02x plain at batch 1 and 8 (issue 15; issue 6 had 1.03);
plain <= 1.02x raw.
Writes perf/out/capture_overhead.json; prints the table last.
"""
import statistics
import sys
import time

import common

BASELINE = {"plain": "raw", "capture": "plain", "hooks": "raw", "hidden_states": "raw",
            "plain_generate": "raw", "capture_generate": "plain_generate"}
TARGETS = {"capture": 1.02, "plain": 1.02, "capture_generate": 1.02, "plain_generate": 1.02}   # issue 15 (was 1.03)
JUDGE = "cpu_paired_ratio"   # with one thread, CPU time is the stable measure on a shared machine


def main():
    p = common.base_parser(__doc__, repeats=5)
    p.add_argument("--models", default="default,tiny", help="comma-separated: default, tiny (default both)")
    p.add_argument("--batches", default="1,8", help="batch sizes (default 1,8)")
    p.add_argument("--new_tokens", type=int, default=32, help="tokens generated per prompt (default 32)")
    p.add_argument("--variants", default="raw,plain,capture,plain_generate,capture_generate,hooks,hidden_states")
    args = p.parse_args()
    if args.quick:
        args.repeats = min(args.repeats, 3)
    common.setup(args.threads)
    from activation_eval.capture.generation import CaptureSettings, GenerationSettings, encode_prompts, generate_records
    from activation_eval.capture.hooks import ActivationCapture
    from activation_eval.models import load_model

    default_model, tokenizer = load_model()
    settings = GenerationSettings(max_new_tokens=args.new_tokens, generate_kwargs={"eos_token_id": -1})
    generic = GenerationSettings(max_new_tokens=args.new_tokens, generate_kwargs={"eos_token_id": -1},
                                 continuous_batching=False)
    results, rows, accounts = [], [], []
    for model_name in args.models.split(","):
        model = default_model if model_name == "default" else common.tiny_llama(tokenizer)
        for batch_size in [int(b) for b in args.batches.split(",")]:
            prompts = common.prompts(batch_size)
            enc = encode_prompts(tokenizer, prompts)
            kwargs = {"do_sample": False, "pad_token_id": tokenizer.pad_token_id,
                      "max_new_tokens": args.new_tokens, "eos_token_id": -1}

            def raw():
                return model.generate(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], **kwargs)

            def hooks():
                with ActivationCapture(model) as cap:
                    out = raw()
                cap.release()
                return out

            def hidden_states():
                return model.generate(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                                      output_hidden_states=True, return_dict_in_generate=True, **kwargs)

            all_variants = {
                "raw": raw,
                "plain": lambda: generate_records(model, tokenizer, prompts, settings),
                "capture": lambda: generate_records(model, tokenizer, prompts, settings, CaptureSettings()),
                "plain_generate": lambda: generate_records(model, tokenizer, prompts, generic),
                "capture_generate": lambda: generate_records(model, tokenizer, prompts, generic, CaptureSettings()),
                "hooks": hooks,
                "hidden_states": hidden_states,
            }
            variants = {k: all_variants[k] for k in args.variants.split(",")}
            _check_same_tokens(model, tokenizer, prompts, settings, CaptureSettings, generate_records)
            print(f"{model_name} batch {batch_size}:", file=sys.stderr)
            wall, cpu = common.interleaved(variants, args.repeats)
            acc = accounting(model, tokenizer, prompts, settings, enc, raw, ActivationCapture)
            acc.update(continuous_accounting(model, tokenizer, prompts, settings))
            plain_s = statistics.median(cpu["plain"]) if "plain" in cpu else statistics.median(next(iter(cpu.values())))
            acc.update(model=model_name, batch=batch_size, plain_s=plain_s)
            acc["estimated_ratio"] = 1 + (acc["hooks_s"] + acc["assembly_extra_s"]) / plain_s
            acc["estimated_ratio_continuous"] = 1 + acc["continuous_s"] / plain_s
            acc["estimated_wrapper_ratio"] = plain_s / max(plain_s - acc["wrapper_s"], 1e-9)
            if model_name == "default":
                acc["target"] = f"<= {TARGETS['capture']} / <= {TARGETS['plain']}"
                acc["verdict"] = "PASS" if (max(acc["estimated_ratio"], acc["estimated_ratio_continuous"])
                                            <= TARGETS["capture"] and
                                            acc["estimated_wrapper_ratio"] <= TARGETS["plain"]) else "MISS"
            accounts.append(acc)
            for name in wall:
                base = BASELINE.get(name) if BASELINE.get(name) in wall else None
                st = common.stats(wall[name], wall[base] if base else None)
                st.update(common.stats(cpu[name], cpu[base] if base else None, prefix="cpu_"))
                row = {"model": model_name, "batch": batch_size, "variant": name, "vs": base,
                       "tokens_per_s": batch_size * args.new_tokens / st["median_s"], **st}
                if model_name == "default" and name in TARGETS and base:
                    row["target"] = f"<= {TARGETS[name]}"
                    row["verdict"] = common.verdict(st[JUDGE], TARGETS[name]).split()[0]
                rows.append(row)
        results.append(model_name)
    path = common.write_json("capture_overhead", {"args": vars(args), "rows": rows, "accounting": accounts},
                             args.out)
    print(f"\nwrote {path}\n")
    print("accounting: what capture adds, each part timed alone over many calls (robust to a noisy machine)")
    print("continuous path (the default): step hooks, prompt copies + routing, per-question assembly, setup")
    print(common.table(accounts, [("model", "model", ""), ("batch", "batch", "d"),
                                  ("step_hook_calls", "step hook calls", "d"), ("step_hook_us", "us/step hook", ".1f"),
                                  ("step_hooks_s", "step hooks s", ".4f"), ("prompt_s", "prompt+route s", ".4f"),
                                  ("finish_s", "assembly s", ".4f"), ("setup_s", "setup s", ".4f"),
                                  ("plain_s", "plain s", ".3f"),
                                  ("estimated_ratio_continuous", "capture/plain", ".4f")]))
    print("model.generate path (continuous_batching=False, used for sampling)")
    print(common.table(accounts, [("model", "model", ""), ("batch", "batch", "d"), ("hook_calls", "hook calls", "d"),
                                  ("hook_us", "us/hook call", ".1f"), ("hooks_s", "hooks s", ".4f"),
                                  ("assembly_extra_s", "assembly s", ".4f"), ("plain_s", "plain s", ".3f"),
                                  ("estimated_ratio", "capture/plain", ".4f"), ("wrapper_s", "wrapper s", ".4f"),
                                  ("estimated_wrapper_ratio", "plain/raw", ".4f"), ("target", "target", ""),
                                  ("verdict", "verdict", "")]))
    print()
    print("measured: variants interleaved")
    print(common.table(rows, [("model", "model", ""), ("batch", "batch", "d"), ("variant", "variant", ""),
                              ("median_s", "median s", ".3f"), ("min_s", "min s", ".3f"),
                              ("tokens_per_s", "tok/s", ".0f"),
                              ("cpu_median_s", "cpu s", ".3f"), ("vs", "vs", ""),
                              ("paired_ratio", "wall ratio", ".3f"), ("cpu_paired_ratio", "cpu ratio", ".3f"),
                              ("cpu_ratio_of_mins", "cpu min ratio", ".3f"),
                              ("target", "target", ""), ("verdict", "verdict", "")]))


def accounting(model, tokenizer, prompts, settings, enc, raw, ActivationCapture, reps=200):
    """For the model.generate path (continuous_batching=False): capture's extra work, each part timed alone:
    (1) one hook call, incl. torch's slower module call path when hooks exist, times the number of hook calls in
    one generate; (2) building the records with activations minus building them without, on the same generate output."""
    import torch

    from activation_eval.capture.generation import (
        GenerationSettings,
        _batch_records,
        _eos_ids,
        _generate_kwargs,
        _shared_fields,
        encode_prompts,
    )
    with ActivationCapture(model) as cap:
        output = raw()
    calls = sum(cap._calls.values())
    for name in cap.names:
        getattr(cap, "_close", lambda name: None)(name)           # cut CPU step buffers to their fill
    steps = {k: list(v) for k, v in cap._steps.items()}
    # (1) capture's own hook on an identity module, fed one-token (decode step) outputs
    x = torch.randn(enc["input_ids"].shape[0], 1, steps[cap.names[-1]][0].shape[-1])
    ident = torch.nn.Identity()
    probe = ActivationCapture(model, layers=[cap.names[-1]])      # its hooks are never registered
    probe_name = probe.names[0]
    hook = probe._post_hook(probe_name)

    def per_call(n=1000):
        probe.release()
        probe._calls[probe_name] = 1                              # later calls = decode steps
        start = time.perf_counter()
        for _ in range(n):
            ident(x)
        elapsed = (time.perf_counter() - start) / n
        probe.release()
        return elapsed
    bare = min(per_call() for _ in range(7))
    handle = ident.register_forward_hook(hook)
    hooked = min(per_call() for _ in range(7))
    handle.remove()
    hook_s = max(hooked - bare, 0.0)
    # (2) record building with and without activations, same tokens
    batch = {k: v.cpu() for k, v in enc.items()}
    generic = GenerationSettings(max_new_tokens=settings.max_new_tokens, generate_kwargs=settings.generate_kwargs,
                                 continuous_batching=False)
    shared = _shared_fields(model, tokenizer, generic, _generate_kwargs(tokenizer, generic), "generate")
    eos_ids = _eos_ids(model, tokenizer)
    output = output.cpu()

    def build(with_cap):
        if with_cap:
            cap._steps, cap._joined = {k: list(v) for k, v in steps.items()}, {}
        start = time.perf_counter()
        _batch_records(tokenizer, prompts, batch, output, eos_ids, shared, cap if with_cap else None)
        return time.perf_counter() - start
    def encode():
        start = time.perf_counter()
        encode_prompts(tokenizer, prompts, settings.use_chat_template)
        return time.perf_counter() - start
    n = max(3, min(reps, int(2.0 / max(build(True), 1e-4))))
    with_cap = statistics.median(build(True) for _ in range(n))
    without = statistics.median(build(False) for _ in range(n))
    encoding = statistics.median(encode() for _ in range(n))
    cap.release()
    return {"hook_calls": calls, "hook_us": hook_s * 1e6, "hooks_s": hook_s * calls,
            "assembly_s": with_cap, "assembly_extra_s": max(with_cap - without, 0.0),
            "wrapper_s": encoding + without}


def continuous_accounting(model, tokenizer, prompts, settings, reps=7):
    """For the continuous path (the default): capture's extra work, part by part. (1) One decode-step
    hook call (torch's hooked module-call path + RowCapture's copy into its step buffer), timed alone
    on an identity module, times the step hook calls of one captured call; (2) everything else
    RowCapture does in that call (prompt and prefix copies, routing, per-question assembly in
    finish), timed method by method inside the call (median of `reps` calls); (3) building,
    entering and leaving the RowCapture, timed alone."""
    import torch

    from activation_eval.capture import row_capture
    from activation_eval.capture.generation import CaptureSettings, generate_records
    timed = {"_store": "prompt_s", "route_prefix": "prompt_s", "route_prefill": "prompt_s",
             "route_step": "prompt_s", "finish": "finish_s"}
    originals = {name: getattr(row_capture.RowCapture, name) for name in timed}
    totals, counts = [], []

    def spy(name, fn):
        def timed_call(self, *args):
            if name == "_store" and self._route[0] == "step":
                counts[-1] += 1                                   # a step hook: accounted by (1)
                return fn(self, *args)
            start = time.perf_counter()
            result = fn(self, *args)
            totals[-1][timed[name]] += time.perf_counter() - start
            return result
        return timed_call
    try:
        for name, fn in originals.items():
            setattr(row_capture.RowCapture, name, spy(name, fn))
        for _ in range(reps):
            totals.append({"prompt_s": 0.0, "finish_s": 0.0})
            counts.append(0)
            generate_records(model, tokenizer, prompts, settings, CaptureSettings())
    finally:
        for name, fn in originals.items():
            setattr(row_capture.RowCapture, name, fn)
    width = len(prompts)                  # generate_records' width: every prompt in one call

    def setup():
        start = time.perf_counter()
        with row_capture.RowCapture(model, width=width, max_steps=settings.max_new_tokens - 1):
            pass
        return time.perf_counter() - start
    setup_s = statistics.median(setup() for _ in range(reps))
    # (1) a step hook on an identity module, fed one-token outputs of `width` rows
    probe = row_capture.RowCapture(model, width=width, max_steps=settings.max_new_tokens - 1)
    name = probe.names[-1]
    x = torch.randn(width, 1, model.config.hidden_size)
    probe.route_step(list(range(width)), [0] * width, x.device)
    hook, ident = probe._post_hook(name), torch.nn.Identity()

    def per_call(n=1000):
        start = time.perf_counter()
        for _ in range(n):
            ident(x)
        return (time.perf_counter() - start) / n
    bare = min(per_call() for _ in range(7))
    handle = ident.register_forward_hook(hook)
    hooked = min(per_call() for _ in range(7))
    handle.remove()
    step_us = max(hooked - bare, 0.0) * 1e6
    calls = int(statistics.median(counts))
    prompt_s = statistics.median(t["prompt_s"] for t in totals)
    finish_s = statistics.median(t["finish_s"] for t in totals)
    return {"step_hook_calls": calls, "step_hook_us": step_us, "step_hooks_s": step_us * calls / 1e6,
            "prompt_s": prompt_s, "finish_s": finish_s, "setup_s": setup_s,
            "continuous_s": step_us * calls / 1e6 + prompt_s + finish_s + setup_s}


def _check_same_tokens(model, tokenizer, prompts, settings, CaptureSettings, generate_records):
    """Capture must not change what the model generates (checked once per model and batch)."""
    plain = generate_records(model, tokenizer, prompts, settings)
    captured = generate_records(model, tokenizer, prompts, settings, CaptureSettings())
    for a, b in zip(plain, captured):
        if not a["output_ids"].equal(b["output_ids"]):
            raise SystemExit(f"capture changed the generated tokens for prompt {a['prompt']!r}")


if __name__ == "__main__":
    main()
