"""GPU check (issue 6): capture overhead on one GPU, batch 1 and 16, and proof that capture adds no
per-step synchronization. Run through perf/gpu_check.sh on one H100/H200 (under 5 minutes).

    .venv/bin/python perf/gpu_check.py --prepare        # here, once: tokenizer + config -> perf/out/gpu_assets
    bash perf/gpu_check.sh                              # there (carry perf/out/gpu_assets)
    .venv/bin/python perf/gpu_check.py --smoke          # CPU smoke test of this script (tiny sizes)

Models, both bfloat16 on the GPU:
    smollm2-135m   the default model's architecture (30 layers, hidden 576). Its real weights are
                   used when models.load_model() works there; otherwise (the GPU machine has no
                   copy of the GGUF package) random weights from its config.json, with its real
                   tokenizer: the timing is the same, since every call generates exactly 32 tokens.
    llama-1b       a random-weight Llama built from a config: hidden 2048, 16 layers, 32 heads
                   (8 KV heads), MLP 8192, the default tokenizer's 49152-token vocabulary (1.07B).
Per model and batch size (1, 16), interleaved repeats, CUDA synchronized around each call,
every call generating exactly --new_tokens tokens per prompt:
    raw      model.generate on the tokenized batch
    plain    generation.generate_records: continuous.decode (the default greedy path)
    capture  generate_records with all layers, all positions (RowCapture)
    plain_generate / capture_generate   the same with continuous_batching=False (model.generate
             under ActivationCapture, the path for sampling)        hooks   generate inside ActivationCapture
Batching, per model: 64 questions, batch 16, the model's EOS set to a token it often emits (random
weights never end on their own), so answers end at different steps: continuous batching against
model.generate batches, questions/s and the same tokens.
Synchronization proof, per model at batch 16: torch.cuda.set_sync_debug_mode("warn") counts
every operation that blocks the host during one call with 16 and one with 32 new tokens, for raw /
hooks (generate path) and plain / capture (continuous path): capture adds no per-step sync when
its count grows with the steps exactly as its baseline's does.
Assembly after generation: the current ActivationCapture.joined (one torch.cat and one .cpu() per
layer, i.e. one blocking copy per layer) against a candidate that copies every layer into pinned
host memory with non_blocking=True and synchronizes once. Writes perf/out/gpu_check.json (and a copy
in $OUT when set); prints the tables last.
"""
import os
import shutil
import statistics
import sys
import time

import common

ASSETS = os.path.join(common.OUT_DIR, "gpu_assets", "smollm2-135m")
ASSET_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
               "chat_template.jinja", "special_tokens_map.json")


def prepare():
    common.setup()
    from activation_eval.models import default_model_dir
    src = default_model_dir()
    os.makedirs(ASSETS, exist_ok=True)
    for name in ASSET_FILES:
        if os.path.exists(os.path.join(src, name)):
            shutil.copy2(os.path.join(src, name), ASSETS)
    size = sum(os.path.getsize(os.path.join(ASSETS, f)) for f in os.listdir(ASSETS))
    print(f"wrote {ASSETS} ({size / 1e6:.1f} MB): carry perf/out/gpu_assets to the GPU machine")


def load_models(args, torch):
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, LlamaConfig

    from activation_eval.models import _prepare_tokenizer
    device, dtype = args.device, torch.bfloat16 if args.device == "cuda" else torch.float32
    tokenizer = AutoTokenizer.from_pretrained(ASSETS)
    out = {}
    try:
        from activation_eval.models import load_model
        model, tokenizer = load_model(device=device, dtype="bfloat16" if device == "cuda" else "float32")
        out["smollm2-135m"] = (model, "real weights")
    except Exception as exc:   # no GGUF package on the GPU machine: same architecture, random weights
        print(f"default model not loadable here ({type(exc).__name__}): random weights from its config",
              file=sys.stderr)
        config = AutoConfig.from_pretrained(ASSETS)
        torch.manual_seed(0)
        with torch.device(device):
            model = AutoModelForCausalLM.from_config(config, dtype=dtype)
        out["smollm2-135m"] = (model, "random weights, real config")
    if args.smoke:
        big = dict(hidden_size=128, intermediate_size=256, num_hidden_layers=4, num_attention_heads=4,
                   num_key_value_heads=2)
    else:
        big = dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                   num_key_value_heads=8)
    config = LlamaConfig(vocab_size=len(tokenizer), max_position_embeddings=4096, tie_word_embeddings=True,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, **big)
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    out["llama-1b"] = (model, "random weights")
    for name, (model, _) in out.items():
        model.eval()
        model.name_or_path_for_records = name
    _prepare_tokenizer(tokenizer, out["smollm2-135m"][0])
    for model, _ in out.values():
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    return out, tokenizer


def main():
    p = common.base_parser(__doc__, repeats=3, threads=0)
    p.add_argument("--prepare", action="store_true", help="write the tokenizer/config assets here and exit")
    p.add_argument("--smoke", action="store_true", help="CPU, tiny sizes, 1 repeat: checks this script runs")
    p.add_argument("--batches", default="1,16")
    p.add_argument("--new_tokens", type=int, default=32)
    p.add_argument("--variants", default="raw,plain,capture,plain_generate,capture_generate",
                   help="timed variants (also: hooks)")
    p.add_argument("--batching_questions", type=int, default=32)
    args = p.parse_args()
    if args.prepare:
        return prepare()
    torch = common.setup(args.threads)
    args.device = "cuda" if torch.cuda.is_available() and not args.smoke else "cpu"
    if args.device == "cpu" and not args.smoke:
        raise SystemExit("no CUDA device: run on a GPU machine (or pass --smoke for a CPU test of the script)")
    if args.smoke:
        args.repeats, args.batches, args.new_tokens = 1, "1,2", 4
    if not os.path.isdir(ASSETS):
        raise SystemExit(f"{ASSETS} is missing: run `.venv/bin/python perf/gpu_check.py --prepare` on the CPU "
                         f"machine and carry perf/out/gpu_assets")
    from activation_eval.capture.generation import CaptureSettings, GenerationSettings, encode_prompts, generate_records
    from activation_eval.capture.hooks import ActivationCapture
    t0 = time.perf_counter()
    models, tokenizer = load_models(args, torch)
    print(f"models ready in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    settings = GenerationSettings(max_new_tokens=args.new_tokens, generate_kwargs={"eos_token_id": -1})
    generic = GenerationSettings(max_new_tokens=args.new_tokens, generate_kwargs={"eos_token_id": -1},
                                 continuous_batching=False)
    timing_rows, sync_rows, join_rows, batching_rows = [], [], [], []
    for model_name, (model, weights) in models.items():
        n_params = sum(p.numel() for p in model.parameters())
        for batch_size in [int(b) for b in args.batches.split(",")]:
            prompts = common.prompts(batch_size)
            enc = encode_prompts(tokenizer, prompts).to(args.device)
            kwargs = {"do_sample": False, "pad_token_id": tokenizer.pad_token_id,
                      "max_new_tokens": args.new_tokens, "eos_token_id": -1}

            def raw():
                return model.generate(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], **kwargs)

            def hooks(keep=False):
                with ActivationCapture(model) as cap:
                    raw()
                if not keep:
                    cap.release()
                return cap

            variants = {"raw": raw, "plain": lambda: generate_records(model, tokenizer, prompts, settings),
                        "capture": lambda: generate_records(model, tokenizer, prompts, settings, CaptureSettings()),
                        "plain_generate": lambda: generate_records(model, tokenizer, prompts, generic),
                        "capture_generate": lambda: generate_records(model, tokenizer, prompts, generic,
                                                                     CaptureSettings()),
                        "hooks": hooks}
            variants = {k: v for k, v in variants.items() if k in args.variants.split(",")}
            print(f"{model_name} batch {batch_size}:", file=sys.stderr)
            wall, _ = common.interleaved(variants, args.repeats, warmup=1)
            base = {"plain": "raw", "capture": "plain", "hooks": "raw", "plain_generate": "raw",
                    "capture_generate": "plain_generate"}
            for name in wall:
                st = common.stats(wall[name], wall[base[name]] if name in base else None)
                timing_rows.append({"model": model_name, "weights": weights, "params_m": n_params / 1e6,
                                    "batch": batch_size, "variant": name, "vs": base.get(name),
                                    "tokens_per_s": batch_size * args.new_tokens / st["median_s"], **st})
            join_rows += compare_assembly(hooks, model_name, batch_size, args, torch)
        for new_tokens in (args.new_tokens // 2, args.new_tokens):
            sync_rows += sync_proof(model_name, new_tokens, variants_for_sync(
                model, tokenizer, args, new_tokens, ActivationCapture, encode_prompts, generate_records,
                GenerationSettings, CaptureSettings), args, torch)
        batching_rows += batching(model_name, model, tokenizer, args, generate_records, GenerationSettings)
    path = common.write_json("gpu_check", {"args": vars(args), "timing": timing_rows, "sync": sync_rows,
                                           "assembly": join_rows, "batching": batching_rows})
    if os.environ.get("OUT"):
        shutil.copy2(path, os.environ["OUT"])
    print(f"\nwrote {path}\n")
    print(f"device: {common.machine_info().get('gpu', 'cpu')}, {args.new_tokens} new tokens per prompt, "
          f"{args.repeats} repeats; ratio = median over repeats of variant / baseline")
    print(common.table(timing_rows, [("model", "model", ""), ("batch", "batch", "d"), ("variant", "variant", ""),
                                     ("median_s", "median s", ".4f"), ("min_s", "min s", ".4f"),
                                     ("tokens_per_s", "tok/s", ".0f"), ("vs", "vs", ""),
                                     ("paired_ratio", "ratio", ".3f"), ("ratio_of_mins", "min ratio", ".3f")]))
    print()
    print(common.table(batching_rows, [("model", "model", ""), ("variant", "decoding", ""),
                                       ("questions", "questions", "d"), ("batch", "batch", "d"),
                                       ("median_s", "median s", ".3f"), ("questions_per_s", "q/s", ".1f"),
                                       ("paired_ratio", "time ratio", ".3f"), ("same_tokens", "same tokens", ""),
                                       ("mean_tokens", "mean tokens", ".1f")]))
    print()
    print(common.table(sync_rows, [("model", "model", ""), ("new_tokens", "new tokens", "d"),
                                   ("variant", "variant", ""), ("syncs", "host syncs", "d")]))
    print()
    print(common.table(join_rows, [("model", "model", ""), ("batch", "batch", "d"), ("method", "assembly", ""),
                                   ("median_s", "median s", ".4f"), ("mb", "MB", ".1f"), ("gb_per_s", "GB/s", ".2f")]))


def variants_for_sync(model, tokenizer, args, new_tokens, ActivationCapture, encode_prompts, generate_records,
                      GenerationSettings, CaptureSettings):
    batch = max(int(b) for b in args.batches.split(","))
    prompts = common.prompts(batch)
    enc = encode_prompts(tokenizer, prompts).to(args.device)
    kwargs = {"do_sample": False, "pad_token_id": tokenizer.pad_token_id, "max_new_tokens": new_tokens,
              "eos_token_id": -1}
    settings = GenerationSettings(max_new_tokens=new_tokens, generate_kwargs={"eos_token_id": -1})

    def raw():
        model.generate(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], **kwargs)

    def hooks():
        with ActivationCapture(model) as cap:
            raw()
        cap.release()
    return {"raw": raw, "hooks": hooks, "plain": lambda: generate_records(model, tokenizer, prompts, settings),
            "capture": lambda: generate_records(model, tokenizer, prompts, settings, CaptureSettings())}


def batching(model_name, model, tokenizer, args, generate_records, GenerationSettings, batch=16):
    """Continuous batching against model.generate batches when answers end at different steps."""
    prompts = common.prompts(args.batching_questions if not args.smoke else 8)
    batch = batch if not args.smoke else 2
    probe = generate_records(model, tokenizer, prompts[:batch], GenerationSettings(max_new_tokens=args.new_tokens))
    counts = {}
    for rec in probe:
        for t in rec["output_ids"][2:12].tolist():
            counts[t] = counts.get(t, 0) + 1
    old_eos = model.generation_config.eos_token_id
    model.generation_config.eos_token_id = max(counts, key=counts.get)     # answers now end apart
    try:
        out = {}
        variants = {name: (lambda c=c: out.__setitem__(name_of(c), generate_records(
            model, tokenizer, prompts, GenerationSettings(max_new_tokens=args.new_tokens, continuous_batching=c),
            batch_size=batch))) for name, c in (("continuous", True), ("generate", False))}
        wall, _ = common.interleaved(variants, max(args.repeats - 1, 1), warmup=1)
    finally:
        model.generation_config.eos_token_id = old_eos
    same = all(a["output_ids"].tolist() == b["output_ids"].tolist() for a, b in zip(out["continuous"], out["generate"]))
    mean_tokens = statistics.mean(len(r["output_ids"]) for r in out["generate"])
    rows = []
    for name in wall:
        st = common.stats(wall[name], wall["generate"] if name != "generate" else None)
        rows.append({"model": model_name, "variant": name, "questions": len(prompts), "batch": batch,
                     "questions_per_s": len(prompts) / st["median_s"], "same_tokens": same,
                     "mean_tokens": mean_tokens, **st})
    return rows


def name_of(continuous):
    return "continuous" if continuous else "generate"


def sync_proof(model_name, new_tokens, variants, args, torch):
    """Host syncs during one call of each variant, counted by torch.cuda.set_sync_debug_mode("warn")
    (one warning per synchronizing operation; the torch profiler took minutes for the same)."""
    import warnings
    rows = []
    for name, fn in variants.items():
        fn()                                              # warm up outside the count
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            if args.device == "cuda":
                torch.cuda.synchronize()
                torch.cuda.set_sync_debug_mode("warn")
            try:
                fn()
            finally:
                if args.device == "cuda":
                    torch.cuda.set_sync_debug_mode("default")
        rows.append({"model": model_name, "new_tokens": new_tokens, "variant": name,
                     "syncs": sum("synchroniz" in str(w.message) for w in seen)})
    return rows


def compare_assembly(hooks, model_name, batch_size, args, torch):
    """After one captured generate: current per-layer cat + .cpu() against pinned non_blocking copies."""
    times = {"cat + .cpu() per layer (current)": [], "cat + pinned non_blocking, one sync": []}
    nbytes = 0
    for _ in range(max(args.repeats, 1)):
        cap = hooks(keep=True)
        steps = {name: list(s) for name, s in cap._steps.items()}
        torch.cuda.synchronize() if args.device == "cuda" else None
        start = time.perf_counter()
        current = [cap.joined(name) for name in cap.names]
        times["cat + .cpu() per layer (current)"].append(time.perf_counter() - start)
        nbytes = sum(t.numel() * t.element_size() for t in current)
        del current
        cap.release()
        if args.device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        pinned = []
        for s in steps.values():
            full = torch.cat(s, dim=1) if len(s) > 1 else s[0]
            host = torch.empty(full.shape, dtype=full.dtype, pin_memory=args.device == "cuda")
            host.copy_(full, non_blocking=True)
            pinned.append(host)
        if args.device == "cuda":
            torch.cuda.synchronize()
        times["cat + pinned non_blocking, one sync"].append(time.perf_counter() - start)
        del pinned, steps
    return [{"model": model_name, "batch": batch_size, "method": k, "median_s": statistics.median(v),
             "mb": nbytes / 1e6, "gb_per_s": nbytes / 1e9 / statistics.median(v)} for k, v in times.items()]


if __name__ == "__main__":
    sys.exit(main())
