"""lm-evaluation-harness's `hf` model with activation capture, registered in lm-eval as "activation-eval".

Public names:
    ActivationEvalLM        HFLM + forward hooks around HFLM's own model calls; .write_run(results)
    MODEL_NAME              "activation-eval": the name lm-eval's registry knows it by
    HARNESS_ARGS            the model_args this class adds to HFLM's (harness/options.py's RUN_ARGS)

Example (the model built by hand and given to lm-eval; tasks/tiny_mc.yaml is a local task):
    >>> import lm_eval
    >>> from lm_eval.tasks import TaskManager
    >>> from activation_eval.harness import ActivationEvalLM
    >>> lm = ActivationEvalLM(pretrained="models/tiny-llama", output_dir="runs/mc", layers=[0, -1],
    ...                       positions="last_prompt", dtype="float32", device="cpu", batch_size=8)
    >>> results = lm_eval.simple_evaluate(model=lm, tasks=["tiny_mc"], limit=4, log_samples=True,
    ...                                   task_manager=TaskManager(include_path="tasks", include_defaults=False))
    >>> summary = lm.write_run(results)                 # the run folder at output_dir
    >>> summary["questions"], summary["correct"] == sum(s["acc"] for s in results["samples"]["tiny_mc"])
    (4, True)
    >>> from activation_eval.store.run_reader import RunReader
    >>> row, record = next(RunReader("runs/mc").records())
    >>> row["id"], sorted(record["activations"]), record["positions_kept"]     # 4 choices: 4 x the context's last
    ('tiny_mc/0', ['layer_0', 'layer_29'], [36, 36, 36, 36])

Tokenisation, batching and scoring are HFLM's, unchanged: this class only wraps the two places
where HFLM runs the model (`_model_call` for log-likelihoods, `_model_generate` for generation) in
the project's ActivationCapture, whose hooks read layer outputs and change nothing, so every
log-likelihood and every generated token is the `hf` backend's.

The run folder is claimed (store/run_writer.py: locked, refused when another writer holds it or it
holds a run, unless resume=true continues this backend's own) when the model is built, before it is
loaded. What is kept, per request (lm-eval Instance): its tokens, positions and scores in memory,
its activations on disk in the run folder's scratch (store/staging.py), one file per scoring or
generation batch, as each batch is answered; `write_run` assembles each document's record from
them once lm-eval has scored the documents (lm_eval_run.py). So memory does not grow with the
number of documents.
  loglikelihood   the request's row of the right-padded scoring batch is found by its tokens
                  ((context + continuation)[:-1], as HFLM feeds it); with P context and N
                  continuation tokens fed, positions (as in main.py: 0-based indices into the fed
                  tokens) are by default the context's last token and the continuation tokens that
                  are fed back, P-1 .. P+N-2: the N positions whose outputs score the N tokens (the
                  last continuation token is never an input). positions=all/prompt/last_prompt/
                  generated/answer/ints mean what they mean for generation, the continuation playing
                  the generated tokens (answer = P-1 .. P+N-2, the default). Requests HFLM answers
                  from one row (its one-token logits cache) are each given that row's positions.
  generate_until  as main.py: left-padded batch under ActivationCapture (default positions "all"),
                  each row cut where lm-eval's stop sequences (or EOS) end its answer. generate() is
                  asked for its raw per-step logits (output_logits; the tokens are unchanged), from
                  which each kept token's log-probability and entropy are taken, as main.py's
                  model.generate path does: no extra forward. lm_eval_run.py turns them into the
                  row's confidence fields and answer positions.
  loglikelihood_rolling  HFLM's, without capture (the row has the log-likelihood, no record).

Several processes (`accelerate launch` / `torchrun` with N processes: lm-eval's data parallelism):
each process answers its share of the documents (lm-eval's rank::world split), writes its own rows
(a part of results.jsonl) and records into the one run folder, and process 0 merges the rows once
all are written (as main.py does; store/run_writer.py). Process 0 claims the folder. lm-eval's HFLM turns data parallelism on only
with more than one GPU; this class also turns it on for CPU processes and several processes sharing
one GPU (otherwise every process would answer every document into the same folder). A process
keeps its own documents' samples as lm-eval gathers them to process 0 (gather_object), and the
repeated requests lm-eval pads a process's share with are recorded once.
"""
import collections
import collections.abc
import contextlib
import logging
import os

import lm_eval
import lm_eval.models  # noqa: F401  (the registry's lazy entries: "hf" stays known next to ours)
import torch
from lm_eval.api.registry import register_model
from lm_eval.models.huggingface import HFLM

from .. import models
from ..capture.generation import CaptureSettings, step_confidence
from ..capture.hooks import ActivationCapture
from ..capture.layers import resolve_layers
from ..capture.positions import kept_positions
from ..store.directions import STEERING_ARGS
from ..store.run_writer import RunWriter
from . import steering
from .options import RUN_ARGS, parse_run_options, stop_length

log = logging.getLogger(__name__)

MODEL_NAME = "activation-eval"
HARNESS_ARGS = tuple(RUN_ARGS)
# output_dir (real path) -> the model whose run folder is not written yet: it holds the folder (and
# its captures) until write_run, which a plain lm_eval.simple_evaluate(model="activation-eval") leaves
# to the caller
UNWRITTEN = {}


class _KeepOutputs(ActivationCapture):
    """ActivationCapture over one plain forward: keeps each layer's whole output (B, T, H) on its device."""

    def __init__(self, model, layers, dtype):
        super().__init__(model, layers, "all", dtype)
        self.outputs = {}

    def _store(self, name, hidden):
        # a copy: a later module may write into this output in place
        self.outputs[name] = hidden.detach().clone()


@register_model(MODEL_NAME)
class ActivationEvalLM(HFLM):
    """lm-eval's HFLM that captures activations and writes a run folder (see the module docstring).

    model_args, besides every HFLM argument (pretrained, dtype, device, batch_size, ...):
      output_dir           the run folder to write (required; refused when it holds anything, unless resume)
      resume               true: continue a run folder this backend wrote (e.g. killed): every document
                           is evaluated again, the folder's own leftovers are cleaned (default false)
      layers               names, ints or module paths (list, or a string split on , ; : or spaces);
                           default: embeddings + every decoder layer
      positions            default: log-likelihood P-1 .. P+N-2, generation "all" (main.py's default)
      activation_store     files (one record file per document) | shards (one shard per task)
      activation_dtype     float32 | bfloat16 | float16 (default: the model's)
      activation_format    pkl | safetensors (the file store's format; main.py's default pkl)
      capture_activations  true (default) | false: rows without records
      confidence           true (default) | false: generation rows without the confidence fields (generate()
                           then keeps no per-step logits: B x steps x vocab float32 until a batch ends)
      steer, steer_layer, ...  main.py's steering flags (harness/steering.py): around _model_call, _model_generate
    """

    def __init__(self, pretrained, output_dir=None, layers=None, positions=None, activation_store="files",
                 activation_dtype=None, activation_format="pkl", capture_activations=True, resume=False, confidence=True,
                 **kwargs):
        options = parse_run_options({"output_dir": output_dir, "layers": layers, "positions": positions,
                                     "activation_store": activation_store, "activation_dtype": activation_dtype,
                                     "activation_format": activation_format,
                                     "capture_activations": capture_activations, "resume": resume,
                                     "confidence": confidence, **{k: kwargs.pop(k) for k in STEERING_ARGS if k in kwargs}},
                                    "lm-eval")
        self.output_dir, self.options = options.output_dir, options
        self.capture_settings = CaptureSettings(options.layers, options.positions, options.dtype)
        self.capture_dtype = self.capture_settings.torch_dtype()        # checks the name before loading
        world, rank = int(os.environ.get("WORLD_SIZE", "1") or 1), int(os.environ.get("RANK", "0") or 0)
        if world > 1 and not torch.cuda.is_available():
            # torchrun on a machine without GPUs: accelerate makes CPU processes a group only when told
            # (`accelerate launch --cpu` sets this too); without it every process would answer everything
            os.environ.setdefault("ACCELERATE_USE_CPU", "true")
        self.writer = self._claim(rank, world)          # before the model loads: a refusal costs nothing
        try:
            # the offline default model by name, as main.py and the Inspect provider take it: its converted folder
            source = models.default_model_dir() if pretrained == models.DEFAULT_MODEL else pretrained
            super().__init__(pretrained=source, **kwargs)
            if source is not pretrained:                 # records and summary name it as it was asked for
                self.model.name_or_path_for_records = pretrained
            self._start(pretrained, rank, world)
        except BaseException:
            UNWRITTEN.pop(os.path.realpath(self.output_dir), None)     # a model that failed holds no folder
            self.writer.release()
            raise

    def _claim(self, rank, world):
        """The run writer of output_dir; process 0 claims the folder (an earlier model of this folder in
        this process, never written, gives it up)."""
        key = os.path.realpath(self.output_dir)
        earlier = UNWRITTEN.pop(key, None)
        if earlier is not None:
            log.warning("%s: an earlier %s model for this output_dir never wrote its run folder; its captures "
                        "are dropped", self.output_dir, MODEL_NAME)
            earlier.writer.release()
        o = self.options
        writer = RunWriter(self.output_dir, "lm-eval", resume=o.resume, capture=o.capture, store=o.store,
                           record_format=o.record_format, rank=rank, world=world)
        if rank == 0:
            writer.claim()
        UNWRITTEN[key] = self
        return writer

    def _start(self, pretrained, rank, world):
        """After HFLM loaded the model: the layers checked, run_config.json written (process 0), the scratch."""
        self.capture_activations = self.options.capture
        self.activation_store, self.activation_format = self.options.store, self.options.record_format
        accelerator = getattr(self, "accelerator", None)
        if accelerator is not None and accelerator.num_processes > 1 and self._world_size == 1:
            # HFLM leaves rank 0 of 1 when it sees at most one GPU: every process would answer everything
            self._rank, self._world_size = accelerator.process_index, accelerator.num_processes
        self.own_samples = None              # this process's samples, several processes (gather_object)
        if self.backend != "causal":
            raise ValueError(f"{MODEL_NAME} captures decoder-only (causal) models; {pretrained!r} is {self.backend}")
        self.layer_names = resolve_layers(self.model, self.capture_settings.layers)   # checked before any request
        self.steering = steering.checked(self.model, self.options.interventions, self.writer.stored_config)
        self.harness_args = {"output_dir": self.output_dir, **self.options.settings(), "resume": self.options.resume}
        if rank == 0:
            model = pretrained if isinstance(pretrained, str) else type(pretrained).__name__
            self.writer.open({"model": model, "lm_eval_version": lm_eval.__version__, **self.options.settings(),
                              "layer_names": list(self.layer_names), "interventions": self.steering.entries},
                             compare=("model", "layer_names", "positions", "activation_store", "activation_dtype",
                                      "activation_format", "capture_activations"))
        if world > 1:
            self.barrier()                   # the folder is open before any process stages a request
        self.staging = self.writer.staging(f"rank{self._rank}")
        self.requests_seen = collections.defaultdict(list)   # (task, doc_id) -> [entry per answered request]
        self._reqs = self._pending = self._batch = self._gen_pending = self._gen_contexts = self._fed_starts = None
        self._staged = 0

    # ------------------------------------------------------------------------- loglikelihood

    def loglikelihood(self, requests, disable_tqdm=False):
        self._reqs = list(requests)
        try:
            results = super().loglikelihood(requests, disable_tqdm=disable_tqdm)
        finally:
            self._reqs = self._pending = self._batch = self._fed_starts = None
        return results

    def _loglikelihood_tokens(self, requests, disable_tqdm=False, override_bs=None):
        reqs = self._reqs
        if reqs is None or len(reqs) != len(requests):       # loglikelihood_rolling's windows: HFLM's alone
            return super()._loglikelihood_tokens(requests, disable_tqdm=disable_tqdm, override_bs=override_bs)
        self._reqs, entries, self._fed_starts = None, [], {}  # fed tokens -> context tokens fed (interventions)
        pending = collections.defaultdict(list)              # fed tokens -> [index of request, ...]
        for i, (_, ctx_ids, cont_ids) in enumerate(requests):
            fed = (list(ctx_ids) + list(cont_ids))[-(self.max_length + 1):][:-1]
            n_ctx = len(fed) - len(cont_ids) + 1             # context tokens fed (fewer when truncated)
            self._fed_starts[tuple(fed)] = n_ctx
            entries.append({"kind": "loglikelihood", "context_ids": fed[:n_ctx], "continuation_ids": list(cont_ids),
                            "positions": self._loglik_positions(n_ctx, len(cont_ids)), "staged": None})
            pending[tuple(fed)].append(i)
        self._pending, self._entries = (pending if self.capture_activations else None), entries
        results = super()._loglikelihood_tokens(requests, disable_tqdm=disable_tqdm, override_bs=override_bs)
        self._flush()
        if self._pending:
            raise RuntimeError(f"{MODEL_NAME}: {sum(map(len, self._pending.values()))} log-likelihood request(s) "
                               f"were scored in no batch row this backend could find; please report this")
        self._pending = None
        for req, entry, (ll, greedy) in zip(reqs, entries, results):
            entry.update(loglikelihood=float(ll), is_greedy=bool(greedy))
            self._keep(req, entry)
        return results

    def _loglik_positions(self, n_ctx, n_cont):
        positions = self.capture_settings.positions
        if positions is None:
            return list(range(n_ctx - 1, n_ctx + n_cont - 1))
        return kept_positions(positions, n_ctx, n_cont)

    def _model_call(self, inps, attn_mask=None, labels=None):
        with steering.scoring(self.steering, inps, self._fed_starts):
            return self._call(inps, attn_mask, labels)

    def _call(self, inps, attn_mask=None, labels=None):
        if self._pending is None:
            return super()._model_call(inps, attn_mask=attn_mask, labels=labels)
        self._flush()
        cap = _KeepOutputs(self.model, self.layer_names, self.capture_dtype)
        with cap:
            logits = super()._model_call(inps, attn_mask=attn_mask, labels=labels)
        self._batch = {"inps": inps.cpu(), "outputs": cap.outputs, "row": 0, "wants": []}
        return logits

    def _select_cont_toks(self, logits, contlen=None, inplen=None):
        batch = self._batch
        if batch is not None:                                  # rows come in batch order, each once
            row = batch["row"]
            batch["row"] += 1
            for i in self._pending.pop(tuple(batch["inps"][row, :inplen].tolist()), ()):
                batch["wants"].append((i, row))
        return super()._select_cont_toks(logits, contlen=contlen, inplen=inplen)

    def _flush(self):
        """Copy the wanted positions of the last scoring batch out of its layer outputs (one
        gather and one device-to-host copy per layer)."""
        batch, self._batch = self._batch, None
        if not batch or not batch["wants"]:
            return
        width = batch["inps"].shape[1]
        flat = [row * width + p for i, row in batch["wants"] for p in self._entries[i]["positions"]]
        counts = [len(self._entries[i]["positions"]) for i, _ in batch["wants"]]
        parts = {}
        for name, hidden in batch["outputs"].items():
            index = torch.tensor(flat, dtype=torch.long, device=hidden.device)
            picked = hidden.reshape(-1, hidden.shape[-1]).index_select(0, index).to(self.capture_dtype or hidden.dtype)
            parts[name] = picked.cpu().split(counts)
        staged = {}
        for k, (i, _) in enumerate(batch["wants"]):
            staged[self._stage_key(self._entries[i])] = {name: parts[name][k].clone() for name in self.layer_names}
        self.staging.put(staged)

    # ------------------------------------------------------------------------- generate_until

    def generate_until(self, requests, disable_tqdm=False):
        """HFLM's generate_until, one call per group of equal generation arguments (HFLM batches
        within such groups anyway), so that each batch row is matched to its request by its context."""
        groups = collections.defaultdict(list)
        for i, req in enumerate(requests):
            groups[_kwargs_key(req.args[1])].append(i)
        results = [None] * len(requests)
        for indices in groups.values():
            group = [requests[i] for i in indices]
            self._gen_pending = collections.defaultdict(collections.deque)
            for j, req in enumerate(group):
                self._gen_pending[req.args[0]].append(j)
            self._gen_entries = [None] * len(group)
            try:
                answers = super().generate_until(group, disable_tqdm=disable_tqdm)
            finally:
                self._gen_pending = self._gen_contexts = None
            for j, (i, answer) in enumerate(zip(indices, answers)):
                results[i] = answer
                if self._gen_entries[j] is not None:
                    self._keep(requests[i], self._gen_entries[j])
        return results

    def tok_batch_encode(self, strings, *args, **kwargs):
        if self._gen_pending is not None:
            self._gen_contexts = list(strings)               # the rows of the next _model_generate
        return super().tok_batch_encode(strings, *args, **kwargs)

    def _model_generate(self, context, max_length, stop, **generation_kwargs):
        with self.steering:                # begin(): each hook's first forward is the prompt, later ones generated
            return self._generate(context, max_length, stop, **generation_kwargs)

    def _generate(self, context, max_length, stop, **generation_kwargs):
        contexts, self._gen_contexts = self._gen_contexts, None
        if self._gen_pending is None or contexts is None or len(contexts) != context.shape[0]:
            return super()._model_generate(context, max_length, stop, **generation_kwargs)
        cap = None
        if self.capture_activations:
            positions = self.capture_settings.positions
            cap = ActivationCapture(self.model, self.layer_names, "all" if positions is None else positions,
                                    self.capture_dtype)
        # output_logits: generate's raw per-step logits (before its logits processors), for the confidence figures
        extra = {"output_logits": True, "return_dict_in_generate": True} if self.options.confidence else {}
        with cap if cap is not None else contextlib.nullcontext():
            output = super()._model_generate(context, max_length, stop, **generation_kwargs, **extra)
        out, width = (output.sequences if extra else output), context.shape[1]
        logprobs, entropies = step_confidence(output.logits, out[:, width:]) if extra else (None, None)  # (B, N)
        del output
        mask = generation_kwargs.get("attention_mask")
        pads = [int((mask[r] == 0).sum()) if mask is not None else 0 for r in range(len(contexts))]
        generated = out[:, width:].cpu()
        gen_lens = [stop_length(self.tokenizer, generated[r].tolist(), stop) for r in range(len(contexts))]
        captured = cap.batch_activations(pads, [width - p for p in pads], gen_lens, width) if cap is not None else None
        if cap is not None:
            cap.release()
        staged = {}
        for r, text in enumerate(contexts):
            j = self._gen_pending[text].popleft()
            entry = {"kind": "generate_until", "context_ids": context[r, pads[r]:].tolist(),
                     "output_ids": generated[r, :gen_lens[r]].tolist(), "staged": None, "positions": None,
                     "logprobs": None if logprobs is None else logprobs[r, :gen_lens[r]].tolist(),
                     "entropies": None if entropies is None else entropies[r, :gen_lens[r]].tolist()}
            if captured is not None:
                acts, entry["positions"] = captured[r]
                staged[self._stage_key(entry)] = acts
            self._gen_entries[j] = entry
        self.staging.put(staged)
        return out

    def _stage_key(self, entry):
        """A new key for an entry's activations in the scratch (kept in the entry)."""
        entry["staged"] = f"r{self._staged}"
        self._staged += 1
        return entry["staged"]

    # ------------------------------------------------------------------------- the run folder

    def _keep(self, req, entry):
        entry["request_index"] = req.idx
        seen = self.requests_seen[(req.task_name, req.doc_id)]
        if any(e["request_index"] == req.idx and e["kind"] == entry["kind"] for e in seen):
            if entry.get("staged") is not None:
                self.staging.drop(entry["staged"])
            return            # a repeat of the request (lm-eval's padding across processes, repeats > 1)
        seen.append(entry)

    def gather_object(self, obj, dst=0):
        """HFLM's; several processes: keeps this process's own logged samples ({task: [sample, ...]}),
        which lm-eval gathers to process 0 only, for this process's rows."""
        if self.world_size > 1 and isinstance(obj, dict) and obj and all(isinstance(v, list) for v in obj.values()):
            self.own_samples = obj
        return super().gather_object(obj, dst=dst)

    def write_run(self, results):
        """Write the run folder at output_dir from lm-eval's results (which must hold "samples":
        simple_evaluate(log_samples=True)); returns the summary written to summary.json (process 0)."""
        from .lm_eval_run import write_run_folder
        try:
            return write_run_folder(self, results)
        finally:
            if UNWRITTEN.get(os.path.realpath(self.output_dir)) is self:
                del UNWRITTEN[os.path.realpath(self.output_dir)]
            self.requests_seen.clear()
            self.writer.release()


def _kwargs_key(gen_kwargs):
    """The key HFLM's Collator groups a request's generation arguments by (models/utils.py
    Collator.group), so that our groups are exactly its groups."""
    try:
        key = tuple((k, tuple(v) if isinstance(v, collections.abc.Iterable) else v)
                    for k, v in sorted(gen_kwargs.items()))
        hash(key)
        return key
    except (TypeError, AttributeError):
        return repr(gen_kwargs)
