"""Forward-hook capture of per-layer activations during generation, for any decoder-only model.

Public names:
    ActivationCapture(model, layers=None, positions="all", dtype=None)   context manager
    find_decoder_layers(model) -> (path, ModuleList)
    find_final_norm(model) -> (path, module) or (None, None)
    layer_names(model) -> ["embeddings", "layer_0", ..., "final_norm"]
    resolve_layers(model, layers) -> [name, ...]   (validates; names, ints, module paths)
    parse_positions(positions) -> "all" | "prompt" | "generated" | "last_prompt" | [int, ...]
    CaptureError                                   the model's layers cannot be found

Example:
    >>> with ActivationCapture(model, layers=["embeddings", 0, -1, "final_norm"]) as cap:
    ...     out = model.generate(**batch, max_new_tokens=16, do_sample=False)
    >>> (acts, kept), = cap.batch_activations([0], [P], [N], P)   # per row: {name: (positions, hidden)}, kept

Semantics (equal to transformers' output_hidden_states=True, see ACTIVATION_CAPTURE_README.md):
    embeddings   input of the first decoder layer = hidden_states[0] (position embeddings and
                 embedding scaling included, unlike a hook on the embedding module)
    layer_i      output of decoder layer i = hidden_states[i+1]; layer_{L-1} is BEFORE the final norm
    final_norm   output of the final norm = the model's last_hidden_state
    module path  output (or output[0] for tuples) of any module in model.named_modules()
With the KV cache, call 0 of a hook sees the whole (left-padded) prompt and each later call one
token, so an example with P prompt and N generated tokens covers positions 0 .. P+N-2: the last
generated token is never fed back and has no activation.
"""
import torch
from torch import nn

POSITION_MODES = ("all", "prompt", "generated", "last_prompt")
FINAL_NORM_NAMES = ("norm", "ln_f", "final_layer_norm", "final_layernorm", "norm_f", "final_norm")


class CaptureError(ValueError):
    """The model's decoder layers or final norm cannot be found."""


# ----------------------------------------------------------------------------- finding layers

def find_decoder_layers(model):
    """The ModuleList of decoder layers: the longest list of same-class blocks (path, module)."""
    n_expected = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    best = None
    for path, module in model.named_modules():
        if not isinstance(module, nn.ModuleList) or len(module) == 0:
            continue
        if len({type(child) for child in module}) != 1:
            continue
        score = (len(module) == n_expected, len(module), -path.count("."))
        if best is None or score > best[0]:
            best = (score, path, module)
    if best is None:
        raise CaptureError(
            f"cannot find the decoder layers of {type(model).__name__}: no nn.ModuleList of blocks. "
            f"Pass module paths instead, e.g. one of: {_suggest_paths(model)}")
    return best[1], best[2]


def find_final_norm(model):
    """The norm applied after the last decoder layer, next to the layer list: (path, module)."""
    layers_path, _ = find_decoder_layers(model)
    parent_path = layers_path.rpartition(".")[0]
    parent = model.get_submodule(parent_path) if parent_path else model
    norms = [(name, child) for name, child in parent.named_children()
             if "norm" in type(child).__name__.lower() or name in FINAL_NORM_NAMES]
    if not norms:
        return None, None
    named = [item for item in norms if item[0] in FINAL_NORM_NAMES]
    name, module = (named or norms)[-1]
    return (f"{parent_path}.{name}" if parent_path else name), module


def _suggest_paths(model, limit=8):
    paths = [p for p, m in model.named_modules() if p and p.count(".") <= 3 and not isinstance(m, nn.ModuleList)]
    return ", ".join(paths[:limit]) or "(the model has no sub-modules)"


def layer_names(model):
    """Every canonical name this model offers, in forward order."""
    _, layers = find_decoder_layers(model)
    names = ["embeddings"] + [f"layer_{i}" for i in range(len(layers))]
    if find_final_norm(model)[1] is not None:
        names.append("final_norm")
    return names


# ----------------------------------------------------------------------------- parsing user input

def resolve_layers(model, layers=None):
    """Validate and normalise a layer request into canonical names / module paths.

    layers: None (embeddings + every decoder layer), a comma-separated string, or a list of
    names ("embeddings", "layer_3", "final_norm"), ints (negative count from the end: -1 is the
    last decoder layer) and module paths ("model.layers.3.mlp"). Raises ValueError listing the
    valid names before any hook exists.
    """
    valid = layer_names(model)
    n_layers = sum(name.startswith("layer_") for name in valid)
    if layers is None:
        return valid[: n_layers + 1]
    if isinstance(layers, (str, int)):
        layers = [layers]
    items = []
    for item in layers:
        items.extend(p.strip() for p in item.split(",")) if isinstance(item, str) else items.append(item)
    modules = dict(model.named_modules())
    resolved = []
    for item in items:
        name = _resolve_one(item, valid, n_layers, modules)
        if name not in resolved:
            resolved.append(name)
    if not resolved:
        raise ValueError(f"no layers requested; valid names: {_describe(valid)}")
    return resolved


def _resolve_one(item, valid, n_layers, modules):
    if isinstance(item, str) and item.lstrip("-").isdigit():
        item = int(item)
    if isinstance(item, bool) or not isinstance(item, (int, str)):
        raise ValueError(f"layer {item!r} must be a name, an int or a module path; valid names: {_describe(valid)}")
    if isinstance(item, int):
        if not -n_layers <= item < n_layers:
            raise ValueError(f"layer index {item} is out of range for a model with {n_layers} layers "
                             f"(use {-n_layers} .. {n_layers - 1}); valid names: {_describe(valid)}")
        return f"layer_{item % n_layers}"
    if item in valid:
        return item
    if item and item in modules:
        return item
    raise ValueError(f"unknown layer {item!r}; valid names: {_describe(valid)}, "
                     f"or a module path from model.named_modules() such as 'model.layers.0.mlp'")


def _describe(valid):
    layers = [v for v in valid if v.startswith("layer_")]
    rest = [v for v in valid if not v.startswith("layer_")]
    span = f"{layers[0]} .. {layers[-1]}" if len(layers) > 1 else ", ".join(layers)
    return ", ".join(rest[:1] + [span] + rest[1:]) + f" (or ints {-len(layers)} .. {len(layers) - 1})"


def parse_positions(positions="all"):
    """'all' | 'prompt' | 'generated' | 'last_prompt' | ints (list, or a string '0,5,-1')."""
    if positions is None:
        return "all"
    if isinstance(positions, str):
        if positions in POSITION_MODES:
            return positions
        try:
            positions = [int(p) for p in positions.split(",") if p.strip()]
        except ValueError:
            raise ValueError(f"unknown positions {positions!r}; use one of {', '.join(POSITION_MODES)} "
                             f"or comma-separated token indices like 0,5,-1") from None
    if isinstance(positions, int) and not isinstance(positions, bool):
        positions = [positions]
    if not isinstance(positions, (list, tuple)) or not positions or not all(
            isinstance(p, int) and not isinstance(p, bool) for p in positions):
        raise ValueError(f"positions must be one of {', '.join(POSITION_MODES)} or a non-empty list of ints, got {positions!r}")
    return list(positions)


def kept_positions(positions, prompt_len, gen_len):
    """Absolute positions kept for one example with prompt_len prompt and gen_len generated tokens."""
    covered = prompt_len + max(gen_len, 1) - 1  # positions 0 .. P+N-2 have activations
    if positions == "all":
        return list(range(covered))
    if positions == "prompt":
        return list(range(prompt_len))
    if positions == "last_prompt":
        return [prompt_len - 1]
    if positions == "generated":
        return list(range(prompt_len, covered))
    kept = []
    for p in positions:
        if not -covered <= p < covered:
            raise ValueError(f"position {p} is out of range: this example has activations at positions "
                             f"0 .. {covered - 1} ({prompt_len} prompt + {gen_len} generated tokens; the last "
                             f"generated token has none)")
        kept.append(p % covered)
    return kept


# ----------------------------------------------------------------------------- the context manager

class ActivationCapture:
    """Register forward hooks on entry, remove exactly those on exit (also on exceptions).

    >>> with ActivationCapture(model, layers=[0, -1], positions="last_prompt") as cap:
    ...     model.generate(**batch, max_new_tokens=8, do_sample=False)
    >>> cap.batch_activations(pads=[2], prompt_lens=[7], gen_lens=[8], prompt_width=9)[0][0]["layer_0"].shape   # (1, hidden)

    Per step a hook only keeps a detached reference to the layer output (no device transfer):
    tensors stay on the model's device until `batch_activations` is called. On the CPU, the
    one-token outputs of later steps are copied into a growing per-layer buffer instead: holding
    ~1000 small tensors among the model's large temporaries fragments the C heap; on a GPU
    references cost nothing, while a copy would be one more kernel per layer and step.
    """

    def __init__(self, model, layers=None, positions="all", dtype=None):
        self.model = model
        self.names = resolve_layers(model, layers)          # validated before any hook exists
        self.positions = parse_positions(positions)
        self.dtype = dtype or next(model.parameters()).dtype
        self._targets = self._hook_targets()
        self._handles = []
        self._steps = {name: [] for name in self.names}      # name -> per-call tensors (B, T, H)
        self._calls = {name: 0 for name in self.names}
        self._open = {}                                      # name -> _StepBuffer of one-token CPU steps
        self._prompt_only = self.positions in ("prompt", "last_prompt")
        self._joined = {}

    def _hook_targets(self):
        _, layers = find_decoder_layers(self.model)
        _, norm = find_final_norm(self.model)
        targets = []
        for name in self.names:
            if name == "embeddings":
                targets.append((name, layers[0], "pre"))
            elif name == "final_norm":
                targets.append((name, norm, "post"))
            elif name.startswith("layer_") and name[6:].isdigit():
                targets.append((name, layers[int(name[6:])], "post"))
            else:
                targets.append((name, self.model.get_submodule(name), "post"))
        return targets

    def __enter__(self):
        try:
            for name, module, kind in self._targets:
                if kind == "pre":
                    handle = module.register_forward_pre_hook(self._pre_hook(name), with_kwargs=True)
                else:
                    handle = module.register_forward_hook(self._post_hook(name))
                self._handles.append(handle)
        except BaseException:
            self.remove()
            raise
        return self

    def __exit__(self, *exc):
        self.remove()
        return False

    def remove(self):
        """Remove this capture's hooks, newest first; safe to call twice."""
        while self._handles:
            self._handles.pop().remove()

    def _pre_hook(self, name):
        def hook(module, args, kwargs):
            hidden = args[0] if args else kwargs.get("hidden_states")
            self._store(name, hidden)
        return hook

    def _post_hook(self, name):
        def hook(module, args, output):
            # 5.x decoder layers return a bare tensor; output[0] on it would take batch row 0
            self._store(name, output if isinstance(output, torch.Tensor) else output[0])
        return hook

    def _store(self, name, hidden):
        call = self._calls[name]
        self._calls[name] = call + 1
        if call:                                             # a decode step: one token per row
            if self._prompt_only:
                return                                       # only the prompt step is needed
            if hidden.requires_grad:
                hidden = hidden.detach()
            buf = self._open.get(name)
            if buf is not None and buf.take(hidden):
                return
            if hidden.dim() == 3 and hidden.shape[1] == 1 and hidden.is_cpu:
                self._open_step_buffer(name, hidden, buf)
                return
        elif self.positions == "generated":
            # keep only the shape, so a 1-token answer still yields an empty (0, hidden) tensor
            self._steps[name].append(hidden.new_empty((hidden.shape[0], 0, hidden.shape[-1])))
            return
        hidden = hidden.detach()
        if self.positions == "last_prompt":
            hidden = hidden[:, -1:]                          # do not keep the whole prompt alive
        self._close(name)
        # a copy: a later module may write into this output in place (tests/test_continuous.py)
        self._steps[name].append(hidden.clone())

    def _open_step_buffer(self, name, hidden, full):
        """Start a step buffer for one-token CPU outputs (B, 1, H): 32 steps, then twice the full one's."""
        self._close(name)
        steps = self._steps[name]
        buf = self._open[name] = _StepBuffer(hidden, 32 if full is None else 2 * full.tensor.shape[1], len(steps))
        steps.append(buf.tensor)
        buf.take(hidden)

    def _close(self, name):
        """Cut the open step buffer of a layer to its filled part."""
        buf = self._open.pop(name, None)
        if buf is not None:
            self._steps[name][buf.index] = buf.tensor[:, :buf.filled]

    def _offset(self, prompt_width):
        """Padded index of the first stored position."""
        if self.positions == "last_prompt":
            return prompt_width - 1
        return prompt_width if self.positions == "generated" else 0

    def joined(self, name):
        """All stored steps of one layer as one CPU tensor (B, S, H), in the capture dtype."""
        if name not in self._joined:
            self._close(name)
            steps = self._steps.pop(name)
            if not steps:
                raise RuntimeError(f"layer {name!r} was never called: run the model inside the capture")
            if steps[0].dim() != 3:
                raise CaptureError(f"{name!r} outputs shape {tuple(steps[0].shape)}, not (batch, seq, hidden)")
            full = torch.cat(steps, dim=1) if len(steps) > 1 else steps[0]
            self._joined[name] = full.to(dtype=self.dtype).cpu()  # one transfer per layer
        return self._joined[name]

    def batch_activations(self, pads, prompt_lens, gen_lens, prompt_width):
        """[(acts, kept), ...] for every batch row at once; row i has pads[i] left-pad tokens,
        prompt_lens[i] real prompt tokens and gen_lens[i] generated tokens (up to its EOS).

        Each row keeps exactly its own positions (pad dropped, cut at its EOS). Built layer by
        layer: each layer's joined buffer is dropped as soon as every row has its copy, so a
        batch's activations are held about once during assembly. Consumes the buffers.
        """
        kept = [kept_positions(self.positions, p, g) for p, g in zip(prompt_lens, gen_lens)]
        offset = self._offset(prompt_width)
        index = [torch.tensor([pad + p - offset for p in k], dtype=torch.long) for pad, k in zip(pads, kept)]
        acts = [{} for _ in kept]
        for name in self.names:
            parts = self._cpu_parts(name)
            if parts is None:                                 # on a GPU: one transfer per layer
                full = self.joined(name)                      # (B, S, H) on the CPU
                del self._joined[name]
                for row, idx in enumerate(index):
                    acts[row][name] = full[row].index_select(0, idx)   # a fresh tensor owning its storage
                del full
                continue
            # on the CPU: each row's positions straight from the stored steps into its own tensor
            # (no joined (B, S, H) copy: 45 MB less to allocate and fault in per call at batch 8)
            ends = torch.tensor([0] + [part.shape[1] for part in parts]).cumsum(0)
            for row, idx in enumerate(index):
                out = parts[0].new_empty((len(idx), parts[0].shape[2]))
                if bool((idx[1:] >= idx[:-1]).all()):        # ascending (all but user-ordered indices)
                    cuts = torch.searchsorted(idx, ends).tolist()
                    for k, part in enumerate(parts):
                        if cuts[k] < cuts[k + 1]:
                            torch.index_select(part[row], 0, idx[cuts[k]:cuts[k + 1]] - ends[k],
                                               out=out[cuts[k]:cuts[k + 1]])
                else:
                    for k, part in enumerate(parts):
                        here = (idx >= ends[k]) & (idx < ends[k + 1])
                        out[here] = part[row].index_select(0, idx[here] - ends[k])
                acts[row][name] = out
            del parts
        return list(zip(acts, kept))

    def _cpu_parts(self, name):
        """A layer's stored steps [(B, s, H), ...] when all are on the CPU in the capture dtype (then
        consumed), else None (joined() handles them)."""
        self._close(name)
        steps = self._steps.get(name)
        if not steps or steps[0].dim() != 3 or any(t.device.type != "cpu" or t.dtype != self.dtype for t in steps):
            return None
        return self._steps.pop(name)

    def release(self):
        """Drop every buffered tensor (call after the records are built)."""
        self._steps = {name: [] for name in self.names}
        self._open = {}
        self._joined = {}


class RowCapture(ActivationCapture):
    """ActivationCapture for continuous batching, where rows join and leave the batch between forwards.

    >>> cap = RowCapture(model, layers=[0, -1], width=8, max_steps=31)
    >>> with cap:
    ...     cap.route_prefill([question], pads=[0]); model(...)            # a prompt forward
    ...     cap.route_step([slot], [0]); model(...)                         # a one-token forward
    >>> acts, kept = cap.finish(question, slot, prompt_len, gen_len)

    The decoding loop announces every forward: `route_prefix()` before a forward over the start
    that all prompts share (kept once, prepended to each); `route_prefill(questions, pads)` before
    a forward over new, left-padded prompts after that start (row i is questions[i] with pads[i]
    pad tokens); `route_step(slots, steps, device)` before a one-token forward (row i writes step
    steps[i] of the question in slot slots[i]).
    A prompt's positions are kept per question; one-token steps go into a per-layer buffer
    (width * max_steps, 1, hidden) on the model's device with one index_copy_ per layer and step
    (the flat row indices are computed once per step, by route_step).
    `finish` returns the question's (activations, kept positions) on the CPU and frees its slot.
    """

    def __init__(self, model, layers=None, positions="all", dtype=None, *, width, max_steps):
        super().__init__(model, layers, positions, dtype)
        self.width, self.max_steps = width, max(max_steps, 1)
        self._route = self._step_index = None
        self._prefix = {}       # name -> (prefix length, hidden) of the prompts' shared start, if any
        self._prompts = {}      # question -> {name: tensor (prompt positions kept, hidden)}
        self._buffers = {}      # name -> (width * max_steps, 1, hidden) step buffer
        self._keeps_steps = self.positions not in ("prompt", "last_prompt")
        self._meta = {}         # name -> (hidden size, dtype, device) of its outputs

    def route_prefix(self):
        self._route = ("prefix", None, None)

    def route_prefill(self, questions, pads):
        self._route = ("prefill", list(questions), list(pads))

    def route_step(self, slots, steps, device):
        last = self._step_index
        if last is not None and last[0] == slots and last[1] == [s - 1 for s in steps]:
            index = last[2] + 1                          # same rows, one step on: no host-to-device copy
        else:
            index = torch.tensor([slot * self.max_steps + step for slot, step in zip(slots, steps)], device=device)
        self._step_index = (list(slots), list(steps), index)
        self._route = ("step", index, None)

    def _store(self, name, hidden):
        route = self._route
        if route is None:
            raise RuntimeError("RowCapture: a forward ran without route_prefill/route_step")
        if route[0] == "step":                               # per layer and decode step: one copy, no checks
            if self._keeps_steps:
                buf = self._buffers.get(name)
                if buf is None:
                    buf = self._step_buffer(name, hidden)
                buf.index_copy_(0, route[1], hidden.detach() if hidden.requires_grad else hidden)
            return
        self._check(name, hidden)
        hidden = hidden.detach()
        kind, who, pads = route
        if kind == "prefix":
            if self.positions not in ("generated", "last_prompt"):
                self._prefix[name] = hidden[0].clone()
        elif self.positions != "generated":
            # copies, not views: a later module may write into this output in place (the copy is
            # ~0.1% of a call), and a view would keep the whole batch's output alive
            last = self.positions == "last_prompt"
            for row, (question, pad) in enumerate(zip(who, pads)):
                self._prompts.setdefault(question, {})[name] = (hidden[row, -1:] if last else hidden[row, pad:]).clone()

    def _check(self, name, hidden):
        """A (batch, seq, hidden) output; its hidden size, dtype and device are kept for finish."""
        if hidden.dim() != 3:
            raise CaptureError(f"{name!r} outputs shape {tuple(hidden.shape)}, not (batch, seq, hidden)")
        if name not in self._meta:
            self._meta[name] = (hidden.shape[-1], hidden.dtype, hidden.device)

    def _step_buffer(self, name, hidden):
        """The layer's step buffer (width * max_steps, 1, hidden): row slot * max_steps + step of a
        question in `slot` holds its decode step `step`, so a step's rows go in with one index_copy_."""
        self._check(name, hidden)
        self._buffers[name] = hidden.new_empty((self.width * self.max_steps, 1, hidden.shape[-1]))
        return self._buffers[name]

    def finish(self, question, slot, prompt_len, gen_len):
        """(acts {name: (positions, hidden)}, kept positions) of one question, on the CPU."""
        kept = kept_positions(self.positions, prompt_len, gen_len)
        prompt = self._prompts.pop(question, {})
        n_steps = max(gen_len, 1) - 1                        # tokens fed back: positions P .. P+N-2
        fulls = []
        for name in self.names:
            if name not in self._meta:
                raise RuntimeError(f"layer {name!r} was never called: run the model inside the capture")
            size, dtype, device = self._meta[name]
            parts = [p[name] for p in (self._prefix, prompt) if name in p]
            if self._keeps_steps:
                buf = self._buffers.get(name)
                start = slot * self.max_steps
                parts.append(buf[start:start + n_steps, 0] if buf is not None and n_steps
                             else torch.empty((0, size), dtype=dtype, device=device))
            full = torch.cat(parts) if len(parts) > 1 else parts[0]
            if isinstance(self.positions, list):
                full = full.index_select(0, torch.tensor(kept, device=full.device))
            fulls.append(full.to(self.dtype))
        return dict(zip(self.names, _to_cpu(fulls))), kept

    def release(self):
        super().release()
        self._prefix, self._prompts, self._buffers, self._route, self._step_index = {}, {}, {}, None, None


class _StepBuffer:
    """A CPU tensor (B, capacity, H) that a layer's one-token outputs (B, 1, H) are copied into, step
    by step; `index` is its place in the layer's list of stored steps."""
    __slots__ = ("tensor", "filled", "index", "step_shape", "dtype")

    def __init__(self, like, capacity, index):
        self.tensor = like.new_empty((like.shape[0], capacity, like.shape[2]))
        self.filled, self.index, self.step_shape, self.dtype = 0, index, like.shape, like.dtype

    def take(self, hidden):
        """Copy one step in; False (nothing copied) when full or `hidden` has another shape or dtype."""
        if self.filled == self.tensor.shape[1] or hidden.shape != self.step_shape or hidden.dtype != self.dtype:
            return False
        self.tensor.narrow(1, self.filled, 1).copy_(hidden)
        self.filled += 1
        return True


def _to_cpu(tensors):
    """CPU copies that own their bytes; from a GPU, one device-to-host copy (one sync) for all of
    them when their shapes allow stacking, instead of one per tensor."""
    same = len({(t.shape, t.dtype, t.device) for t in tensors}) == 1
    if len(tensors) > 1 and same and tensors[0].device.type != "cpu":
        return [t.clone() for t in torch.stack(tensors).cpu().unbind(0)]
    return [t.cpu() if t.device.type != "cpu" else (t.clone() if t._is_view() else t) for t in tensors]
