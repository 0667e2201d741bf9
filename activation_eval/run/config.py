"""Every setting of a benchmark run, checked once; which of them a resumed run must share.

Public names:
    RunConfig              the settings (what the CLI's flags fill in; field names = flag names), with
                           .generation_settings(), .capture_settings(model), .prompt_settings(),
                           .benchmark_options(), .resume_view(), .applied_interventions() (the
                           Intervention tuple of --ablate / --steer or the `interventions` field),
                           .bind_model(model) (checks them against the model), .intervention_entries()
    RunError               bad run input (existing folder, mismatched resume, bad value, ...)
    RESUME_KEYS            the fields that change what an answer or record is (marked `resume`)
    resume_defaults()      {resume key: default}: the value an older run folder without that key used
    benchmark_label(path)  the benchmark as stored and printed (absolute path, or hf:NAME)
    cli_fields()           [(field, flag metadata)] in --help order: what cli.build_parser turns into flags
    GROUPS                 the --help groups, in order
    config_from_args(args) the one place parsed flags become a RunConfig
    parse_limit(limit)     --limit: an int N >= 1 or a fraction 0 < f < 1
    ACTIVATION_STORES      ("files", "shards"): --activation_store
    ACTIVATION_FORMATS     ("pkl", "safetensors"): --activation_format
    MC_SCORING             ("generate", "loglikelihood"): how multiple-choice rows are answered
    MC_STYLES              ("mmlu", "cloze"): what --mc_scoring loglikelihood scores (--mc_style)
    DEFAULT_SHARD_MB       --shard_size_mb's default (the shard store's target shard size)

Example:
    >>> config = RunConfig(limit=10, output_dir="results/try", capture_activations=True)
    >>> config.resume_view()["max_new_tokens"]
    32
    >>> config.generation_settings().max_new_tokens
    32

Adding a flag: one field here, `name: type = _setting(default, group, help, ...)` (resume=True if a
resumed run must match it; choices=, metavar=). cli.build_parser makes --name from it, with the
same default and choices; nothing else lists the settings.
"""
import dataclasses
import datetime
import math
import os

from ..capture.generation import DTYPE_NAMES, CaptureSettings, GenerationSettings
from ..capture.intervene import POSITIONS
from ..capture.layers import resolve_layers
from ..eval.benchmark import DEFAULT_BENCHMARK
from ..eval.benchmark_files import HF_PREFIX
from ..eval.benchmark_limits import LIMITS_HELP, parse_limits
from ..eval.multiple_choice import MC_STYLES
from ..eval.prompts import DEFAULT_FEWSHOT_SEED, PromptSettings, check_template, lists_choices
from ..models import CHAT_TEMPLATE_SETTINGS, DEFAULT_MODEL, DTYPES, check_device
from ..schema.names import parse_positions
from ..store.atomic import file_in_the_way
from ..store.errors import RunFolderError
from ..store.run_folder import ACTIVATIONS_DIR
from . import distributed, steering

MC_SCORING = ("generate", "loglikelihood")
ACTIVATION_STORES = ("files", "shards")
ACTIVATION_FORMATS = ("pkl", "safetensors")
DEFAULT_SHARD_MB = 256      # --shard_size_mb: one layer of a 256 MB shard is one 8 MB read (31 layers)

# the --help groups, in order; each field's metadata names its group
GROUPS = ("model", "benchmark", "prompt", "generation", "decoding and scoring", "steering and ablation", "output",
          "activation capture", "several processes (torchrun / accelerate launch)")


class RunError(RunFolderError):
    """A run cannot start or continue; the message says why and what to do (a RunFolderError: the
    run folder's own refusals, raised by store/, are ones too)."""


def _setting(default, group, help, *, resume=False, metavar=None, choices=None, default_text=None, flag=None):
    """A RunConfig field and its command-line flag --<name> (the one place its default and choices live).

    resume: a resumed run must share it (it changes what an answer or record is). default_text: how
    --help shows the default (else the value itself; None defaults are not shown). flag: another flag
    name (a True default: the --no_<name> flag that turns it off). group None: no flag (set in code)."""
    cli = None if group is None else {"group": group, "help": help, "metavar": metavar, "choices": choices,
                                      "default_text": default_text, "flag": flag}
    return dataclasses.field(default=default, metadata={"resume": resume, "cli": cli})


_M, _B, _P, _G, _D, _S, _O, _C, _N = GROUPS


@dataclasses.dataclass
class RunConfig:
    # model
    model: str = _setting(DEFAULT_MODEL, _M, "hub id, local model folder or .gguf file", resume=True,
                          metavar="NAME_OR_PATH", default_text=f"{DEFAULT_MODEL}, offline")
    device: str = _setting("auto", _M, "auto, cpu, cuda, cuda:N or mps", metavar="DEV")
    dtype: str = _setting("auto", _M, "model dtype", resume=True, choices=tuple(DTYPES),
                          default_text="auto = float32 on CPU, the checkpoint's elsewhere")
    device_map: str = _setting(None, _M, "passed to from_pretrained: auto spreads a model too large for one GPU "
                               "over the GPUs (and CPU); with several processes on a node, each spreads over its "
                               "own share of the GPUs", metavar="MAP")
    max_memory: str = _setting(None, _M, "with --device_map: memory per device, e.g. 0=20GiB,1=20GiB,cpu=60GiB "
                               "(with several processes on a node, GPU numbers count within each process's share)",
                               metavar="LIST")
    chat_template: str = _setting("auto", _M, "wrap prompts in the tokenizer's chat template", resume=True,
                                  choices=CHAT_TEMPLATE_SETTINGS, default_text="auto = when it has one")
    # benchmark
    benchmark: str = _setting(DEFAULT_BENCHMARK, _B, "JSONL, JSON, CSV, TSV or parquet file, a folder saved with "
                              "datasets' save_to_disk, or hf:NAME for datasets.load_dataset", resume=True,
                              metavar="PATH", default_text="the built-in data/benchmark.jsonl")
    subset: str = _setting(None, _B, "hf:NAME's configuration, e.g. all for cais/mmlu", resume=True, metavar="NAME")
    split: str = _setting(None, _B, "split of hf:NAME or a datasets folder (needed when it has several), e.g. test",
                          resume=True, metavar="NAME")
    skip_rows: int = _setting(0, _B, "CSV/TSV: lines before the header row", resume=True, metavar="N")
    question_field: str = _setting("question", _B, "the question column", resume=True, metavar="NAME")
    answer_field: str = _setting("answer", _B, "the gold answer column; several (accepted aliases, empty cells "
                                 "ignored) as a comma list or a glob such as 'answer_*'", resume=True, metavar="NAMES")
    choices_field: str = _setting("choices", _B, "a list of choices, or ARC's {label, text}", resume=True,
                                  metavar="NAME")
    id_field: str = _setting("id", _B, "the question id column", resume=True, metavar="NAME",
                             default_text="id; rows without one get q- + a hash of the question")
    category_field: str = _setting("category", _B, "accuracy is also reported per category", resume=True,
                                   metavar="NAME")
    strict: bool = _setting(False, _B, "a row the grader cannot use is an error (default: skipped with a warning, "
                            "counted)")
    benchmark_limits: str = _setting(None, _B, LIMITS_HELP, metavar="LIMITS",
                                     default_text="rows=1000000,cell_bytes=1MiB,total_bytes=1GiB,depth=100")
    limit: object = _setting(None, _B, "only N questions (an integer), or a fraction of them (e.g. 0.1 = 10%, "
                             "rounded up); the first ones unless --shuffle", metavar="N")
    shuffle: bool = _setting(False, _B, "with --limit: a random subset (seeded by --seed, kept in benchmark "
                             "order), so it spans the benchmark's categories")
    question_ids: object = _setting(None, None, None, resume=True)   # code only (the causal check's folds):
    # answer only these question ids (a tuple, kept in benchmark order), after --limit / --shuffle
    # prompt
    system_prompt: str = _setting(None, _P, "system message of the chat template (without a template: prepended "
                                  "to each prompt)", resume=True, metavar="TEXT")
    prompt_template: str = _setting(None, _P, "format string with {question} and {choices} (the lettered "
                                    "choices), e.g. 'Question: {question}\\n{choices}\\nAnswer:'", resume=True,
                                    metavar="FORMAT", default_text="the question and a one-line instruction")
    num_fewshot: int = _setting(0, _P, "K solved examples before each question, never the question itself",
                                resume=True, metavar="K")
    fewshot_split: str = _setting(None, _P, "draw the examples from this split of --benchmark", resume=True,
                                  metavar="NAME", default_text="the other questions")
    fewshot_file: str = _setting(None, _P, "draw the examples from this benchmark file (same field names)",
                                 resume=True, metavar="PATH")
    fewshot_seed: int = _setting(DEFAULT_FEWSHOT_SEED, _P, "seed of the example draw, fixed per question",
                                 resume=True, metavar="N",
                                 default_text=f"{DEFAULT_FEWSHOT_SEED}, as lm-evaluation-harness")
    # generation
    batch_size: int = _setting(8, _G, "prompts decoded at once (--mc_scoring loglikelihood: questions scored at "
                               "once); with greedy decoding a finished answer's row is refilled with the next "
                               "question at once (continuous batching)", metavar="N")
    unit_batches: int = _setting(1, _G, "continuous batching: refill finished rows from a unit of N batches "
                                 "(N x --batch_size questions, answered whole). 1 = an interruption loses at most "
                                 "the questions in flight; more = fewer emptying ends of units (faster), but "
                                 "--resume answers up to N x --batch_size questions again", metavar="N")
    continuous_batching: bool = _setting(True, _G, "answer fixed batches with model.generate instead (rows that "
                                         "finished keep decoding)", flag="--no_continuous_batching")
    max_new_tokens: int = _setting(32, _G, "tokens generated per answer", resume=True, metavar="N")
    # decoding and scoring
    temperature: float = _setting(0.0, _D, "0 = greedy, > 0 samples: each answer from its own stream seeded by "
                                  "(--seed, question id, sample), so answers do not depend on batching or --resume",
                                  resume=True, metavar="T", default_text="0 = greedy")
    top_p: float = _setting(1.0, _D, "nucleus sampling", resume=True, metavar="P", default_text="1.0 = off")
    top_k: int = _setting(0, _D, "top-k sampling", resume=True, metavar="K", default_text="0 = off")
    seed: int = _setting(0, _D, "seeds sampling and --shuffle", resume=True, metavar="N")
    num_samples: int = _setting(1, _D, "answers per question, each its own results row (with `sample`) and record "
                                "(more than 1 needs --temperature > 0)", resume=True, metavar="N")
    mc_scoring: str = _setting("generate", _D, "multiple-choice rows: generate an answer and read its letter, or "
                               "score each choice's log-likelihood as a continuation of the prompt (lm-eval's "
                               "multiple_choice: acc and acc_norm, no generation; rows without choices are skipped)",
                               resume=True, choices=MC_SCORING)
    mc_style: str = _setting(None, _D, "with --mc_scoring loglikelihood, lm-eval's conventions: mmlu = the prompt "
                             "lists the lettered choices and ends 'Answer:', the letters ' A', ' B', ... are scored; "
                             "cloze (ARC, HellaSwag) = the prompt does not list them ('Question: ...\nAnswer:'), "
                             "each choice's text is scored", resume=True, choices=MC_STYLES,
                             default_text="mmlu, or cloze when --prompt_template has no {choices}")
    p_true: bool = _setting(False, _D, "after each unit of questions is answered, ask the model whether each proposed "
                            "answer is correct (Kadavath et al. 2022: 'Question: ...\nProposed Answer: ...\nIs the "
                            "proposed answer:\n (A) True\n (B) False\nThe proposed answer is:'), score ' (A)' and "
                            "' (B)' by log-likelihood, and record P(True) = pA / (pA + pB) as p_true in each row. "
                            "Costs one scoring forward per answer", resume=True)
    gold_logprob: bool = _setting(False, _D, "after each unit of questions is answered, score each question's gold "
                                  "answer as a continuation of its prompt (teacher forcing, under the run's "
                                  "interventions) and record gold_logprob_sum, gold_logprob_mean and gold_num_tokens "
                                  "in each row (eval/gold_logprob.py). Costs one scoring forward per question",
                                  resume=True)
    # steering and ablation (capture/intervene.py); checked in _check_interventions, built once
    steer: str = _setting(None, _S, "add alpha times this direction (made a unit vector) to --steer_layer's output "
                          "while answering: a .safetensors file with one 1-D tensor 'direction', or a .npy vector",
                          metavar="FILE")
    steer_layer: str = _setting(None, _S, "the layer --steer edits: layer_3, 3, -1, embeddings, final_norm or a "
                                "module path", metavar="LAYER")
    steer_alpha: float = _setting(None, _S, "how far, in the residual's own units (0: a plain run, bit for bit)",
                                  metavar="A")
    ablate: str = _setting(None, _S, "project this direction out of --ablate_layer's output (directional ablation); "
                           "applied before --steer", metavar="FILE")
    ablate_layer: str = _setting(None, _S, "the layer --ablate edits (as --steer_layer)", metavar="LAYER")
    intervention_positions: str = _setting("all", _S, "where --steer and --ablate apply: all, prompt (the prompt's "
                                           "positions) or generated (the generated tokens fed back; "
                                           "--mc_scoring loglikelihood and --gold_logprob: the scored continuation)",
                                           choices=POSITIONS)
    interventions: tuple = _setting((), None, None)   # in code: Intervention objects (steer(...), ablate(...)),
    #                                                   instead of the flags (the causal check's in-memory directions)
    _built: tuple = dataclasses.field(default=(), init=False, repr=False, compare=False)    # the edits, in order
    _entries: list = dataclasses.field(default_factory=list, init=False, repr=False, compare=False)   # their JSON
    # output
    output_dir: str = _setting(None, _O, "run folder", metavar="DIR", default_text="results/<timestamp>")
    resume: bool = _setting(False, _O, "continue the run in --output_dir, skipping answered questions")
    progress: bool = _setting(True, None, None)     # progress bars (the CLI's --quiet turns them off)
    # activation capture
    capture_activations: bool = _setting(False, _C, "save each question's per-layer activations", resume=True)
    activation_save_dir: str = _setting(None, _C, "where the record files go. A folder elsewhere, e.g. on scratch "
                                        "storage, is reached through <output_dir>/activations (made a symlink to it) "
                                        "and belongs to this one run: another run folder using it is refused, so "
                                        "give each run its own", resume=True, metavar="DIR",
                                        default_text="<output_dir>/activations")
    layers: str = _setting(None, _C, "comma-separated names, indices or module paths, e.g. "
                           "embeddings,0,5,-1,final_norm", resume=True, metavar="LIST",
                           default_text="embeddings and every decoder layer")
    positions: str = _setting("all", _C, "all, prompt, generated, last_prompt, answer (the last "
                              "prompt token and the generated tokens), or token indices like 0,5,-1",
                              resume=True, metavar="MODE")
    activation_dtype: str = _setting(None, _C, "dtype of the saved activations", resume=True,
                                     choices=tuple(DTYPE_NAMES), default_text="the model's dtype")
    activation_format: str = _setting("pkl", _C, "format of the per-question files", resume=True,
                                      choices=ACTIVATION_FORMATS)
    activation_store: str = _setting("files", _C, "files: one record file per question; shards: one .safetensors "
                                     "file per group of units of questions (--shard_size_mb), each layer contiguous "
                                     "(fast to write and to read one layer across 100k questions; read with "
                                     "load_activations(run_dir, question_id) or load_run_layer)", resume=True,
                                     choices=ACTIVATION_STORES)
    shard_size_mb: float = _setting(DEFAULT_SHARD_MB, _C, "shards: finished units of questions are held in memory "
                                    "until their activations reach this size, then written as one shard and their "
                                    "rows appended (also after 10 minutes); a crash loses the held units, which "
                                    "--resume answers again. 0: one unit per shard", metavar="MB")
    # several processes
    dist_timeout: float = _setting(distributed.DEFAULT_TIMEOUT_MIN, _N, "minutes a process waits for the others, "
                                   "e.g. at the end for the slowest", metavar="MIN")

    def __post_init__(self):
        for f in dataclasses.fields(self):             # the flags' choices hold for RunConfig(...) too
            choices = (f.metadata.get("cli") or {}).get("choices")
            value = getattr(self, f.name)
            if choices and value not in choices and not (value is None and f.default is None):
                raise RunError(f"--{f.name} must be one of {', '.join(choices)}, got {value!r}")
        check_device(self.device)
        if self.prompt_template is not None:
            check_template(self.prompt_template)
        if self.num_fewshot < 0:
            raise RunError(f"--num_fewshot must be at least 0, got {self.num_fewshot}")
        if self.skip_rows < 0:
            raise RunError(f"--skip_rows must be at least 0, got {self.skip_rows}")
        if self.fewshot_split and self.fewshot_file:
            raise RunError("pass --fewshot_split or --fewshot_file, not both")
        if (self.fewshot_split or self.fewshot_file) and not self.num_fewshot:
            raise RunError("--fewshot_split / --fewshot_file need --num_fewshot K (K >= 1)")
        self.limit = parse_limit(self.limit)
        if self.question_ids is not None:
            self.question_ids = tuple(str(q) for q in self.question_ids)
        self._check_interventions()
        try:
            parse_limits(self.benchmark_limits)
        except ValueError as exc:
            raise RunError(str(exc)) from None
        self._check_decoding()
        if self.batch_size < 1:
            raise RunError(f"--batch_size must be at least 1, got {self.batch_size}")
        if isinstance(self.unit_batches, bool) or not isinstance(self.unit_batches, int) or self.unit_batches < 1:
            raise RunError(f"--unit_batches must be an integer >= 1, got {self.unit_batches!r}")
        if self.max_new_tokens < 1:
            raise RunError(f"--max_new_tokens must be at least 1, got {self.max_new_tokens}")
        if not (self.shard_size_mb >= 0 and math.isfinite(self.shard_size_mb)):
            raise RunError(f"--shard_size_mb must be a number of MB >= 0 (0: one unit per shard), got {self.shard_size_mb}")
        if self.activation_store == "shards" and self.num_samples > 1:
            # a shard's index maps a question id to one row; samples would share the id
            raise RunError("--activation_store shards keeps one record per question: with --num_samples > 1 "
                           "use the default --activation_store files")
        if self.max_memory is not None:
            if not self.device_map:
                raise RunError("--max_memory needs --device_map (e.g. --device_map auto)")
            distributed.parse_max_memory(self.max_memory)        # checked now, used at load time
        if not self.dist_timeout > 0:
            raise RunError(f"--dist_timeout must be a positive number of minutes, got {self.dist_timeout}")
        if self.resume and self.output_dir is None:
            raise RunError("--resume continues the run in --output_dir: pass --output_dir DIR, the folder of "
                           "the run to continue")
        if self.output_dir is None:
            stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
            self.output_dir = os.path.join("results", stamp)
        if self.activation_save_dir is None:
            self.activation_save_dir = os.path.join(self.output_dir, ACTIVATIONS_DIR)
        for flag in ("output_dir", "activation_save_dir"):
            folder = getattr(self, flag)
            blocker = file_in_the_way(folder)
            if blocker:
                where = "is a file" if blocker == os.path.abspath(folder) else f"is inside {blocker}, which is a file"
                raise RunError(f"--{flag} {folder} {where}, not a folder: give a folder path (it is made if "
                               f"missing), e.g. --{flag} results/run1")

    def benchmark_options(self):
        """The keyword arguments of eval.benchmark.read_benchmark these settings give."""
        return {"question_field": self.question_field, "answer_field": self.answer_field,
                "choices_field": self.choices_field, "id_field": self.id_field, "category_field": self.category_field,
                "skip_rows": self.skip_rows, "subset": self.subset, "split": self.split, "strict": self.strict,
                "limits": self.benchmark_limits}

    def prompt_settings(self):
        return PromptSettings(template=self.prompt_template, num_fewshot=self.num_fewshot,
                              fewshot_seed=self.fewshot_seed, style=self.mc_style)

    def _check_decoding(self):
        if isinstance(self.num_samples, bool) or not isinstance(self.num_samples, int) or self.num_samples < 1:
            raise RunError(f"--num_samples must be an integer >= 1, got {self.num_samples!r}")
        if self.mc_scoring != "loglikelihood" and self.mc_style is not None:
            raise RunError(f"--mc_style {self.mc_style} chooses what --mc_scoring loglikelihood scores: add "
                           f"--mc_scoring loglikelihood, or drop --mc_style")
        if self.mc_scoring == "loglikelihood":
            self._resolve_mc_style()
            if self.temperature or self.num_samples > 1:
                raise RunError("--mc_scoring loglikelihood generates nothing: --temperature and --num_samples "
                               "do not apply (drop them, or use --mc_scoring generate)")
            if self.positions == "generated":
                raise RunError("--mc_scoring loglikelihood captures the prompt only: use --positions prompt, "
                               "last_prompt, answer (= last_prompt), all (= prompt) or prompt token indices")
        elif self.num_samples > 1 and not self.temperature:
            raise RunError(f"--num_samples {self.num_samples} with greedy decoding gives the same answer "
                           f"{self.num_samples} times: add --temperature (e.g. 0.7) to sample")
        try:   # the sampling settings are checked where they are used: the generation settings
            self.generation_settings()
        except ValueError as exc:
            raise RunError(f"--{str(exc)}") from None

    def _resolve_mc_style(self):
        """--mc_style's default (mmlu when the prompt lists the lettered choices, else cloze), and mmlu
        refused for a template whose prompts never show the letters it scores."""
        listed = lists_choices(self.prompt_template)
        if self.mc_style is None:
            self.mc_style = "mmlu" if listed else "cloze"
        elif self.mc_style == "mmlu" and not listed:
            raise RunError("--mc_style mmlu scores the letters ' A', ' B', ... but --prompt_template has no "
                           "{choices}, so the prompt never shows them: add {choices} to the template, or use "
                           "--mc_style cloze (scores each choice's text)")

    def generation_settings(self):
        """The capture.generation.GenerationSettings of this run (how every answer is generated)."""
        return GenerationSettings(max_new_tokens=self.max_new_tokens, use_chat_template=self.chat_template,
                                  continuous_batching=self.continuous_batching, system_prompt=self.system_prompt,
                                  temperature=self.temperature, top_p=self.top_p, top_k=self.top_k, seed=self.seed,
                                  interventions=self.applied_interventions())

    def _check_interventions(self):
        """--steer / --ablate (files read and checked now, once) or the `interventions` field, never both
        (run/steering.py); layers and sizes are checked against the model by bind_model."""
        try:
            self.interventions, self._built = steering.interventions_from_settings(self)
        except ValueError as exc:
            raise RunError(str(exc)) from None
        self._entries = [item.entry() for item in self._built]       # the layers as given until bind_model

    def applied_interventions(self):
        """The edits made while answering (capture/intervene.py), in order: from --ablate then --steer, or
        the `interventions` field; () for a plain run."""
        return self._built

    def bind_model(self, model):
        """Check the interventions against `model` (layers, hidden size; RunError) and name their layers canonically."""
        try:
            self._entries = steering.entries_for(model, self._built)
        except ValueError as exc:
            raise RunError(str(exc)) from None

    def intervention_entries(self):
        """[entry, ...] of the interventions (Intervention.entry(): kind, layer, positions, alpha,
        direction_sha256, direction_source, hidden_size); [] for a plain run."""
        return [dict(entry) for entry in self._entries]

    def capture_settings(self, model):
        """The CaptureSettings of this run for `model` (--layers resolved against it, the activation dtype
        checked), or None without --capture_activations."""
        if not self.capture_activations:
            return None
        capture = CaptureSettings(resolve_layers(model, self.layers), parse_positions(self.positions),
                                  self.activation_dtype)
        capture.torch_dtype()
        return capture

    def resume_view(self):
        """The settings a resumed run must share, paths made comparable."""
        view = {k: getattr(self, k) for k in RESUME_KEYS}
        view["benchmark"] = benchmark_label(self.benchmark)
        if self.fewshot_file:
            view["fewshot_file"] = os.path.abspath(self.fewshot_file)
        view["activation_save_dir"] = os.path.relpath(self.activation_save_dir, self.output_dir)
        if self.question_ids is not None:
            view["question_ids"] = list(self.question_ids)           # as JSON stores it
        view["interventions"] = self.intervention_entries()       # compared by schema.interventions_differ
        return view


def benchmark_label(benchmark):
    """The benchmark as stored and printed: an absolute path, or hf:NAME as given."""
    return benchmark if str(benchmark).startswith(HF_PREFIX) else os.path.abspath(benchmark)


RESUME_KEYS = tuple(f.name for f in dataclasses.fields(RunConfig) if f.metadata.get("resume"))


def resume_defaults():
    """{resume key: its field default}: what a run folder written before a setting existed used."""
    return {f.name: f.default for f in dataclasses.fields(RunConfig) if f.metadata.get("resume")}


_LIMIT_HELP = ("--limit must be at least 1 (a number of questions, e.g. 20) or a fraction between 0 and 1 "
               "(e.g. 0.1 = 10%), got {limit!r}")


def parse_limit(limit):
    """--limit as given (int, float or text): None, an int N >= 1, or a fraction 0 < f < 1."""
    if limit is None:
        return None
    value = limit
    if isinstance(limit, str):
        try:
            value = int(limit)
        except ValueError:
            try:
                value = float(limit)
            except ValueError:
                value = None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RunError(_LIMIT_HELP.format(limit=limit))
    if isinstance(value, float) and value.is_integer() and value >= 1:
        value = int(value)
    if isinstance(value, int) and value >= 1:
        return value
    if isinstance(value, float) and 0 < value < 1 and math.isfinite(value):
        return value
    raise RunError(_LIMIT_HELP.format(limit=limit))


def cli_fields():
    """The RunConfig fields that have a command-line flag, in --help order: [(field, its cli metadata)]."""
    fields = [(f, f.metadata["cli"]) for f in dataclasses.fields(RunConfig) if f.metadata.get("cli")]
    return sorted(fields, key=lambda fc: GROUPS.index(fc[1]["group"]))      # stable: field order within a group


def config_from_args(args, **extra):
    """A RunConfig from parsed flags: every field whose flag (same dest) was given a value (flags
    left at None take the field's default), plus `extra` fields set by the CLI itself."""
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(RunConfig)
              if f.init and getattr(args, f.name, None) is not None}
    return RunConfig(**values, **extra)
