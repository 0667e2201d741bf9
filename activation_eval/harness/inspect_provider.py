"""Inspect AI model provider "activation-eval": any Inspect task answered by this project's
generation code with activation capture, plus a run folder (inspect_run.py) every analysis mode reads.

Public names:
    ActivationEvalAPI    Inspect's ModelAPI for the provider (registered by activation_eval/inspect_registry.py
                         through pyproject's [project.entry-points.inspect_ai])
    PROVIDER             "activation-eval": the prefix of --model
    MODEL_ARGS           the -M arguments it takes (see ActivationEvalAPI)

Example:
    $ inspect eval task.py --model activation-eval/path/to/model --max-tokens 64 \\
        -M output_dir=runs/r1 -M layers=[0,-1] -M activation_store=shards
    >>> from inspect_ai import Task, eval
    >>> from inspect_ai.dataset import MemoryDataset, Sample
    >>> from inspect_ai.scorer import match
    >>> from activation_eval.store.run_reader import RunReader
    >>> task = Task(dataset=MemoryDataset([Sample(input="2+2=", target="4", id="s1")]), scorer=match())
    >>> logs = eval(task, model="activation-eval/models/tiny-llama", display="none", log_dir="logs", max_tokens=4,
    ...             model_args={"output_dir": "runs/insp", "device": "cpu", "layers": "0"})
    inspect_ai v...
    >>> row = RunReader("runs/insp").rows[0]
    >>> row["id"].endswith("/s1"), type(row["correct"])       # the sample's first scorer
    (True, <class 'bool'>)

Generation: capture/generation.py's generate_records (continuous batching when it applies, else
model.generate on left-padded batches, under ActivationCapture): greedy unless the task or
--temperature asks for a temperature > 0 (then seeded per sample, seed = --seed or 0). Inspect's
samples call generate() concurrently: calls with equal settings that arrive together are decoded
as one batch of at most batch_size. The chat template applies as in main.py (auto: when the
tokenizer has one); a system message becomes the system prompt, and a conversation of several
turns goes through the template whole. Stop sequences (stop_seqs) cut the answer, its tokens and
its activations after the token that completes one. Tools, logprobs and several choices per call
are not supported.

Which call's capture a sample keeps: the last generate() call of the sample (the one whose output
Inspect scores; its prompt holds every earlier turn); the row counts the calls (generate_calls).
"""
import logging
import os

import anyio
import anyio.to_thread
import inspect_ai
from inspect_ai._util.error import PrerequisiteError
from inspect_ai.log._samples import sample_active
from inspect_ai.model import (
    ChatCompletionChoice,
    ChatMessageAssistant,
    GenerateConfig,
    ModelAPI,
    ModelOutput,
    ModelUsage,
)

from ..capture.confidence import OUTPUT_ENTROPIES, OUTPUT_LOGPROBS, confidence_fields
from ..capture.generation import CaptureSettings, GenerationSettings, generate_records
from ..capture.layers import resolve_layers
from ..models import load_model
from ..store.errors import RunFolderError
from ..store.run_writer import RunWriter
from . import inspect_run, steering
from .options import INSPECT_MODEL_ARGS, RUN_ARGS, HarnessArgumentError, parse_run_options, stop_length

log = logging.getLogger(__name__)

PROVIDER = "activation-eval"
MODEL_ARGS = INSPECT_MODEL_ARGS
DEFAULT_MAX_TOKENS = 512        # when neither the task nor --max-tokens sets max_tokens
GATHER_S = 0.05                 # how long a generate() call waits for others to join its batch


class ProviderError(PrerequisiteError, RunFolderError):
    """A -M argument or the run folder refused: Inspect prints the message alone (no traceback)."""

    def __init__(self, message):
        PrerequisiteError.__init__(self, message)
        RunFolderError.__init__(self, message)

    def __str__(self):
        return str(self.message)


class ActivationEvalAPI(ModelAPI):
    """Inspect model API: the model loaded by activation_eval.models.load_model, answers generated
    with capture, the run folder written as samples are scored (inspect_run.py hooks).

    -M arguments:
      output_dir           the run folder to write (required; refused when it holds anything, unless resume)
      resume               true: continue a run folder this provider wrote (e.g. killed); samples evaluated
                           again replace their rows (default false)
      layers               names, ints or module paths (list or "0;-1"); default embeddings + every layer
      positions            all (default) | prompt | generated | last_prompt | answer | list of indices
      activation_store     files (one record file per sample) | shards (shards per task)
      activation_dtype     float32 | bfloat16 | float16 (default: the model's)
      activation_format    pkl | safetensors (the file store's format)
      capture_activations  true (default) | false: rows without records
      confidence           true (default) | false: rows without the confidence fields
      steer, steer_layer, steer_alpha, ablate, ablate_layer, intervention_positions   main.py's steering flags:
                           the edits made while generating (harness/steering.py); rows and run_config say so
      dtype, device        the model's (activation_eval.models.load_model: auto | float32 | ...; auto | cpu | cuda)
      batch_size           most calls decoded together (default 16)
      model_path           load the model from here instead of the name after "activation-eval/"
      use_chat_template    auto (default) | on | off
      continuous_batching  true (default) | false (model.generate on fixed batches)
    """

    def __init__(self, model_name, base_url=None, api_key=None, config=None, **model_args):
        super().__init__(model_name=model_name, base_url=base_url, api_key=api_key, config=config or GenerateConfig())
        unknown = sorted(set(model_args) - set(MODEL_ARGS))
        if unknown:
            raise ProviderError(f"{PROVIDER}: unknown model argument(s) {', '.join(unknown)}; "
                                f"known: {', '.join(MODEL_ARGS)}")
        args = {**RUN_ARGS, "dtype": "auto", "device": "auto", "batch_size": 16, "model_path": None,
                "use_chat_template": "auto", "continuous_batching": True, **model_args}
        try:
            self._configure(args)
            self.writer = RunWriter(self.output_dir, "inspect", resume=self.options.resume, capture=self.options.capture,
                                    store=self.options.store, record_format=self.options.record_format).claim()
        except RunFolderError as exc:
            raise ProviderError(str(exc)) from None
        try:             # the folder is claimed before the model loads: a refusal costs nothing
            self.source = _model_source(args["model_path"] or model_name)
            self.model, self.tokenizer = load_model(self.source, dtype=args["dtype"], device=args["device"])
            self.layer_names = resolve_layers(self.model, self.capture.layers)   # a bad layer fails here
            self.capture.layers = self.layer_names
            self.intervention_entries = steering.checked(self.model, self.options.interventions,
                                                         self.writer.stored_config).entries
            self.harness_args = {**{k: args[k] for k in MODEL_ARGS if k not in RUN_ARGS and k != "model_path"},
                                 "output_dir": self.output_dir, **self.options.settings(), "model": self.source}
            self.writer.open({**self.harness_args, "inspect_version": inspect_ai.__version__,
                              "layer_names": list(self.layer_names), "interventions": self.intervention_entries},
                             compare=("model", "layer_names", "positions", "activation_store", "activation_dtype",
                                      "activation_format", "capture_activations"))
        except RunFolderError as exc:
            self.writer.release()
            raise ProviderError(str(exc)) from None
        except BaseException:
            self.writer.release()
            raise
        self.calls = {}                      # (eval id, sample id, epoch) -> {"count": n, "record": last}
        self._waiting, self._running = [], None
        self.run = inspect_run.InspectRun(self, self.writer)

    def _configure(self, args):
        """Every -M argument checked (and the capture settings built) before anything is claimed or loaded."""
        self.options = parse_run_options(args, "inspect")
        self.output_dir = self.options.output_dir
        if not isinstance(args["continuous_batching"], bool):
            raise HarnessArgumentError(f"continuous_batching must be true or false, got {args['continuous_batching']!r}")
        if isinstance(args["batch_size"], bool) or not isinstance(args["batch_size"], int) or args["batch_size"] < 1:
            raise HarnessArgumentError(f"batch_size must be an integer >= 1, got {args['batch_size']!r}")
        positions = self.options.positions
        self.capture = CaptureSettings(self.options.layers, "all" if positions is None else positions, self.options.dtype)
        try:
            self.capture.torch_dtype()                                # checks the name before loading
        except ValueError as exc:
            raise HarnessArgumentError(str(exc)) from None
        self.capture_activations = self.options.capture
        self.activation_store, self.activation_format = self.options.store, self.options.record_format
        self.batch_size, self.use_chat_template = args["batch_size"], args["use_chat_template"]
        self.continuous_batching = args["continuous_batching"]

    def close(self):
        """Inspect is done with this model: the run folder is let go."""
        self.writer.release()

    # ------------------------------------------------------------------------- Inspect's ModelAPI

    def max_tokens(self):
        return DEFAULT_MAX_TOKENS

    def max_connections(self):
        return 2 * self.batch_size           # one batch gathers while the other decodes

    def should_retry(self, ex):
        return False                         # a local model: an error does not go away by itself

    def collapse_user_messages(self):
        return True

    async def count_text_tokens(self, text):
        return len(self.tokenizer.encode(text, add_special_tokens=False))

    async def generate(self, input, tools, tool_choice, config):
        if tools:
            raise ValueError(f"{PROVIDER} does not support tools (this task offers {len(tools)}); use a task "
                             f"without tool calls")
        active = sample_active()
        system, conversation = _conversation(input)
        key = _settings_key(config, system)
        sample = (active.eval_id, active.sample.id, active.epoch) if active is not None else None
        call = self.calls.get(sample, {}).get("count", 0)
        seed_key = f"{sample[1]}|{sample[2]}|{call}" if sample is not None else str(len(self._waiting))
        record = await self._submit(key, (conversation, seed_key))
        if sample is not None:
            self.calls[sample] = {"count": call + 1, "record": record}
            self.run.sample_seen(active.eval_id, active.task)
        stopped = record["num_generated_tokens"] < key[0] or _ends_with_eos(self.model, self.tokenizer, record)
        message = ChatMessageAssistant(content=record["response"], model=self.model_name, source="generate")
        n_in, n_out = record["num_prompt_tokens"], record["num_generated_tokens"]
        return ModelOutput(model=self.model_name, usage=ModelUsage(input_tokens=n_in, output_tokens=n_out,
                                                                   total_tokens=n_in + n_out),
                           choices=[ChatCompletionChoice(message=message, stop_reason="stop" if stopped else "max_tokens")])

    # ------------------------------------------------------------------------- batching

    async def _submit(self, key, item):
        """Decode `item` in a batch with the other calls of equal settings that are waiting; one
        batch decodes at a time (in a worker thread, so the event loop stays free)."""
        entry = {"key": key, "item": item, "done": False, "result": None, "error": None}
        self._waiting.append(entry)
        await anyio.sleep(GATHER_S)
        while not entry["done"]:
            if self._running is not None:
                await self._running.wait()
                continue
            self._running = anyio.Event()
            same = [e for e in self._waiting if e["key"] == key]
            batch = same[:self.batch_size] if entry in same[:self.batch_size] else same[:self.batch_size - 1] + [entry]
            self._waiting = [e for e in self._waiting if not any(e is b for b in batch)]
            try:
                results = await anyio.to_thread.run_sync(self._decode, key, [e["item"] for e in batch])
                for e, result in zip(batch, results):
                    e["result"] = result
            except Exception as exc:
                for e in batch:
                    e["error"] = exc
            finally:
                for e in batch:
                    e["done"] = True
                running, self._running = self._running, None
                running.set()
        if entry["error"] is not None:
            raise entry["error"]
        return entry["result"]

    def _decode(self, key, items):
        max_new, temperature, top_p, top_k, seed, system, stop = key
        sampling = temperature > 0
        settings = GenerationSettings(max_new_tokens=max_new, use_chat_template=self.use_chat_template,
                                      continuous_batching=self.continuous_batching, system_prompt=system,
                                      temperature=temperature, top_p=top_p if sampling else 1.0,
                                      top_k=top_k if sampling else 0, seed=seed, confidence=self.options.confidence,
                                      interventions=self.options.interventions)
        capture = self.capture if self.capture_activations else None
        records = generate_records(self.model, self.tokenizer, [conv for conv, _ in items], settings, capture,
                                   batch_size=self.batch_size, keys=[k for _, k in items])
        for record, (conv, _) in zip(records, items):
            record["prompt"] = _prompt_text(conv)
            if stop:
                _cut_at_stop(record, self.tokenizer, stop)
        return records


def _model_source(name):
    """The model to load: Inspect drops the leading "/" of an absolute path written after one slash
    (activation-eval/abs/path); such a folder is found again (activation-eval//abs/path is exact)."""
    if name and not os.path.exists(name) and os.path.isdir("/" + name):
        log.info("%s: model %r is not here; loading the folder /%s", PROVIDER, name, name)
        return "/" + name
    return name


def _conversation(messages):
    """(system prompt or None, prompt): the prompt is the user's text when the conversation is one
    user message, else the list of role/content messages after the system message(s)."""
    system = "\n\n".join(m.text for m in messages if m.role == "system") or None
    rest = [{"role": m.role, "content": m.text} for m in messages if m.role != "system"]
    if len(rest) == 1 and rest[0]["role"] == "user":
        return system, rest[0]["content"]
    return system, rest


def _prompt_text(conversation):
    if isinstance(conversation, str):
        return conversation
    return "\n\n".join(f"{m['role']}: {m['content']}" for m in conversation)


def _settings_key(config, system):
    """What a batch shares: max tokens, sampling (temperature 0 or None = greedy), system prompt, stops."""
    temperature = float(config.temperature or 0.0)
    return (int(config.max_tokens or DEFAULT_MAX_TOKENS), temperature,
            float(config.top_p) if config.top_p is not None else 1.0, int(config.top_k or 0),
            int(config.seed or 0), system, tuple(config.stop_seqs or ()))


def _ends_with_eos(model, tokenizer, record):
    ids = record["output_ids"]
    eos = model.generation_config.eos_token_id
    eos = set(eos if isinstance(eos, (list, tuple)) else [eos]) | {tokenizer.eos_token_id}
    return len(ids) > 0 and int(ids[-1]) in eos


def _cut_at_stop(record, tokenizer, stop):
    """Cut a record after the token that completes its first stop sequence: output ids, response,
    the confidence figures (over the kept tokens) and the activations of positions past the last
    fed token (P + n - 2)."""
    ids = record["output_ids"]
    n = stop_length(tokenizer, ids.tolist(), list(stop))
    if n >= len(ids):
        return
    record["output_ids"] = ids[:n].clone()
    record["num_generated_tokens"] = n
    record["response"] = tokenizer.decode(record["output_ids"], skip_special_tokens=True).strip()
    if OUTPUT_LOGPROBS in record:
        record.update(confidence_fields(record[OUTPUT_LOGPROBS][:n], record[OUTPUT_ENTROPIES][:n]))
    if "activations" in record:
        last = len(record["input_ids"]) + n - 2
        keep = [i for i, p in enumerate(record["positions_kept"]) if p <= last]
        record["activations"] = {name: t[keep].clone() for name, t in record["activations"].items()}
        record["positions_kept"] = [record["positions_kept"][i] for i in keep]
