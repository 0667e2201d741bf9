"""Every setting of a benchmark run, checked once; which of them a resumed run must share.

Public names:
    RunConfig              the settings (what the CLI's flags fill in; field names = flag names)
    RunError               bad run input (existing folder, mismatched resume, bad value, ...)
    RESUME_KEYS            the fields that change what an answer or record is (marked `resume`)
    RESUME_DEFAULTS        their values in runs stored before the field existed
    ACTIVATION_STORES      ("files", "shards"): --activation_store
    config_from_args(args) the one place parsed flags become a RunConfig

Example:
    >>> config = RunConfig(limit=10, output_dir="results/try", capture_activations=True)
    >>> config.resume_view()["max_new_tokens"]
    32

Adding a flag: a field here (with `_resume(...)` if a resumed run must match it) and an argument
with the same dest in cli.build_parser. Nothing else lists the settings.
"""
import dataclasses
import datetime
import os

from ..eval.benchmark import DEFAULT_BENCHMARK
from ..models import DEFAULT_MODEL
from ..store.run_folder import ACTIVATIONS_DIR
from . import distributed


class RunError(ValueError):
    """A run cannot start or continue; the message says why and what to do."""


def _resume(default):
    """A field whose value a resumed run must share (it changes what an answer or record is)."""
    return dataclasses.field(default=default, metadata={"resume": True})


@dataclasses.dataclass
class RunConfig:
    model: str = _resume(DEFAULT_MODEL)           # hub id, local folder, .gguf file
    benchmark: str = _resume(DEFAULT_BENCHMARK)   # JSONL / JSON / CSV
    question_field: str = _resume("question")
    answer_field: str = _resume("answer")
    choices_field: str = _resume("choices")
    id_field: str = _resume("id")
    limit: int = None                   # first N questions of the benchmark
    batch_size: int = 8                 # prompts decoded at once
    continuous_batching: bool = True    # greedy: refill a finished row at once (False: model.generate batches)
    max_new_tokens: int = _resume(32)
    seed: int = _resume(0)
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
    activation_store: str = _resume("files")  # files: one record file per question; shards: one per unit

    def __post_init__(self):
        if self.limit is not None and self.limit < 1:
            raise RunError(f"--limit must be at least 1, got {self.limit}")
        if self.batch_size < 1:
            raise RunError(f"--batch_size must be at least 1, got {self.batch_size}")
        if self.max_new_tokens < 1:
            raise RunError(f"--max_new_tokens must be at least 1, got {self.max_new_tokens}")
        if self.activation_format not in ("pkl", "safetensors"):
            raise RunError(f"--activation_format must be pkl or safetensors, got {self.activation_format!r}")
        if self.activation_store not in ACTIVATION_STORES:
            raise RunError(f"--activation_store must be files or shards, got {self.activation_store!r}")
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

    def resume_view(self):
        """The settings a resumed run must share, paths made comparable."""
        view = {k: getattr(self, k) for k in RESUME_KEYS}
        view["benchmark"] = os.path.abspath(self.benchmark)
        view["activation_save_dir"] = os.path.relpath(self.activation_save_dir, self.output_dir)
        return view


ACTIVATION_STORES = ("files", "shards")
# resume keys added after runs were made: a stored run_config.json without one had this value
RESUME_DEFAULTS = {"activation_store": "files"}

RESUME_KEYS = tuple(f.name for f in dataclasses.fields(RunConfig) if f.metadata.get("resume"))


def config_from_args(args):
    """A RunConfig from parsed flags: every field whose flag (same dest) was given a value; flags
    left at None take the field's default."""
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(RunConfig)
              if getattr(args, f.name, None) is not None}
    return RunConfig(**values)
