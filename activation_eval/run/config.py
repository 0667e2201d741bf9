"""Every setting of a benchmark run, checked once; which of them a resumed run must share.

Public names:
    RunConfig              the settings (what the CLI's flags fill in; field names = flag names)
    RunError               bad run input (existing folder, mismatched resume, bad value, ...)
    RESUME_KEYS            the fields that change what an answer or record is (marked `resume`)
    resume_defaults()      {resume key: default}: the value an older run folder without that key used
    benchmark_label(path)  the benchmark as stored and printed (absolute path, or hf:NAME)
    ACTIVATION_STORES      ("files", "shards"): --activation_store
    config_from_args(args) the one place parsed flags become a RunConfig
    parse_limit(limit)     --limit: an int N >= 1 or a fraction 0 < f < 1
    MC_SCORING             ("generate", "loglikelihood"): how multiple-choice rows are answered
    DEFAULT_SHARD_MB       --shard_size_mb's default (the shard store's target shard size)

Example:
    >>> config = RunConfig(limit=10, output_dir="results/try", capture_activations=True)
    >>> config.resume_view()["max_new_tokens"]
    32

Adding a flag: a field here (with `_resume(...)` if a resumed run must match it) and an argument
with the same dest in cli.build_parser. Nothing else lists the settings.
"""
import dataclasses
import datetime
import math
import os

from ..capture.generation import GenerationSettings
from ..eval.benchmark import DEFAULT_BENCHMARK, HF_PREFIX
from ..eval.prompts import DEFAULT_FEWSHOT_SEED, PromptSettings, check_template
from ..models import DEFAULT_MODEL, check_device
from ..store.run_folder import ACTIVATIONS_DIR
from . import distributed

MC_SCORING = ("generate", "loglikelihood")
DEFAULT_SHARD_MB = 256      # --shard_size_mb: one layer of a 256 MB shard is one 8 MB read (31 layers)


class RunError(ValueError):
    """A run cannot start or continue; the message says why and what to do."""


def _resume(default):
    """A field whose value a resumed run must share (it changes what an answer or record is)."""
    return dataclasses.field(default=default, metadata={"resume": True})


@dataclasses.dataclass
class RunConfig:
    model: str = _resume(DEFAULT_MODEL)           # hub id, local folder, .gguf file
    benchmark: str = _resume(DEFAULT_BENCHMARK)   # JSONL / JSON / CSV / TSV / parquet / datasets folder / hf:NAME
    subset: str = _resume(None)         # hf:NAME's configuration (e.g. MMLU's "all")
    split: str = _resume(None)          # hf:NAME's / a datasets folder's split; needed when it has several
    skip_rows: int = _resume(0)         # CSV/TSV preamble lines before the header
    question_field: str = _resume("question")
    answer_field: str = _resume("answer")   # one column, a comma list or a glob (answer_*): accepted aliases
    choices_field: str = _resume("choices")
    id_field: str = _resume("id")
    category_field: str = _resume("category")
    strict: bool = False                # a row the grader cannot use stops the run (default: skipped, counted)
    system_prompt: str = _resume(None)  # the chat template's system message (prepended without a template)
    prompt_template: str = _resume(None)  # format string with {question} and {choices}
    num_fewshot: int = _resume(0)       # solved examples before each question
    fewshot_split: str = _resume(None)  # draw the examples from this split of the benchmark's dataset
    fewshot_file: str = _resume(None)   # ... or from this benchmark file (same field names)
    fewshot_seed: int = _resume(DEFAULT_FEWSHOT_SEED)
    limit: object = None                # N questions (int >= 1) or a fraction (0 < f < 1) of the benchmark
    shuffle: bool = False               # with limit: a random subset (seeded by seed), not the first N
    batch_size: int = 8                 # prompts decoded at once (loglikelihood: questions scored at once)
    continuous_batching: bool = True    # refill a finished row at once (False: model.generate batches)
    max_new_tokens: int = _resume(32)
    temperature: float = _resume(0.0)   # 0: greedy; > 0: sampling, one seeded stream per answer
    top_p: float = _resume(1.0)         # 1.0: off
    top_k: int = _resume(0)             # 0: off
    seed: int = _resume(0)              # sampling streams, --shuffle subset
    num_samples: int = _resume(1)       # answers per question (each its own row and record)
    mc_scoring: str = _resume("generate")  # generate / loglikelihood (choice continuations, no generation)
    chat_template: str = _resume("auto")  # auto / on / off
    device: str = "auto"
    dtype: str = _resume("auto")
    device_map: str = None              # e.g. auto: spread the model over the GPUs (and CPU)
    max_memory: str = None              # with device_map, e.g. "0=20GiB,1=20GiB,cpu=60GiB"
    dist_timeout: float = distributed.DEFAULT_TIMEOUT_MIN  # minutes a process waits for the others
    output_dir: str = None              # default results/<timestamp>
    resume: bool = False
    capture_activations: bool = _resume(False)
    activation_save_dir: str = _resume(None)  # default <output_dir>/activations
    layers: str = _resume(None)         # e.g. "embeddings,0,5,-1,final_norm"; None: embeddings + all layers
    positions: str = _resume("all")     # which tokens are captured (all / prompt / generated / last_prompt / indices)
    activation_dtype: str = _resume(None)
    activation_format: str = _resume("pkl")  # pkl / safetensors (the file store's format)
    activation_store: str = _resume("files")  # files: one record file per question; shards: units per file
    shard_size_mb: float = DEFAULT_SHARD_MB   # shards: units are grouped until their activations reach this

    def __post_init__(self):
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
        self._check_decoding()
        if self.batch_size < 1:
            raise RunError(f"--batch_size must be at least 1, got {self.batch_size}")
        if self.max_new_tokens < 1:
            raise RunError(f"--max_new_tokens must be at least 1, got {self.max_new_tokens}")
        if self.activation_format not in ("pkl", "safetensors"):
            raise RunError(f"--activation_format must be pkl or safetensors, got {self.activation_format!r}")
        if self.activation_store not in ACTIVATION_STORES:
            raise RunError(f"--activation_store must be files or shards, got {self.activation_store!r}")
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
        if self.output_dir is None:
            stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
            self.output_dir = os.path.join("results", stamp)
        if self.activation_save_dir is None:
            self.activation_save_dir = os.path.join(self.output_dir, ACTIVATIONS_DIR)

    def benchmark_options(self):
        """The keyword arguments of eval.benchmark.read_benchmark these settings give."""
        return {"question_field": self.question_field, "answer_field": self.answer_field,
                "choices_field": self.choices_field, "id_field": self.id_field, "category_field": self.category_field,
                "skip_rows": self.skip_rows, "subset": self.subset, "split": self.split, "strict": self.strict}

    def prompt_settings(self):
        return PromptSettings(template=self.prompt_template, num_fewshot=self.num_fewshot,
                              fewshot_seed=self.fewshot_seed)
    def _check_decoding(self):
        if isinstance(self.num_samples, bool) or not isinstance(self.num_samples, int) or self.num_samples < 1:
            raise RunError(f"--num_samples must be an integer >= 1, got {self.num_samples!r}")
        if self.mc_scoring not in MC_SCORING:
            raise RunError(f"--mc_scoring must be one of {', '.join(MC_SCORING)}, got {self.mc_scoring!r}")
        if self.mc_scoring == "loglikelihood":
            if self.temperature or self.num_samples > 1:
                raise RunError("--mc_scoring loglikelihood generates nothing: --temperature and --num_samples "
                               "do not apply (drop them, or use --mc_scoring generate)")
            if self.positions == "generated":
                raise RunError("--mc_scoring loglikelihood captures the prompt only: use --positions prompt, "
                               "last_prompt, all (= prompt) or prompt token indices")
        elif self.num_samples > 1 and not self.temperature:
            raise RunError(f"--num_samples {self.num_samples} with greedy decoding gives the same answer "
                           f"{self.num_samples} times: add --temperature (e.g. 0.7) to sample")
        try:   # the sampling settings are checked where they are used: the generation settings
            GenerationSettings(temperature=self.temperature, top_p=self.top_p, top_k=self.top_k, seed=self.seed)
        except ValueError as exc:
            raise RunError(f"--{str(exc)}") from None

    def resume_view(self):
        """The settings a resumed run must share, paths made comparable."""
        view = {k: getattr(self, k) for k in RESUME_KEYS}
        view["benchmark"] = benchmark_label(self.benchmark)
        if self.fewshot_file:
            view["fewshot_file"] = os.path.abspath(self.fewshot_file)
        view["activation_save_dir"] = os.path.relpath(self.activation_save_dir, self.output_dir)
        return view


def benchmark_label(benchmark):
    """The benchmark as stored and printed: an absolute path, or hf:NAME as given."""
    return benchmark if str(benchmark).startswith(HF_PREFIX) else os.path.abspath(benchmark)


ACTIVATION_STORES = ("files", "shards")


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


def config_from_args(args):
    """A RunConfig from parsed flags: every field whose flag (same dest) was given a value; flags
    left at None take the field's default."""
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(RunConfig)
              if getattr(args, f.name, None) is not None}
    return RunConfig(**values)
