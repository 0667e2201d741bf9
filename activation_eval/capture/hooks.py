"""Forward-hook capture of per-layer activations during generation, for any decoder-only model.

Public names:
    ActivationCapture(model, layers=None, positions="all", dtype=None)   context manager
    to_cpu(tensors) -> [CPU tensor, ...]           one device-to-host copy for same-shaped tensors
Layer requests are resolved by capture/layers.py, position requests parsed by schema/names.py;
RowCapture (continuous batching) lives in capture/row_capture.py.

Example:
    >>> batch = tok(["Capital of France?"], return_tensors="pt")       # one prompt of P tokens: no padding
    >>> P = batch["input_ids"].shape[1]
    >>> with ActivationCapture(model, layers=["embeddings", 0, -1, "final_norm"]) as cap:
    ...     out = model.generate(**batch, max_new_tokens=16, do_sample=False)
    >>> N = out.shape[1] - P                                       # generated tokens
    >>> (acts, kept), = cap.batch_activations([0], [P], [N], P)   # per row: {name: (positions, hidden)}, kept
    >>> list(acts), acts["layer_2"].shape[1], kept == list(range(P + N - 1))
    (['embeddings', 'layer_0', 'layer_2', 'final_norm'], 64, True)

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

from ..architecture import ArchitectureError as CaptureError
from ..architecture import find_decoder_layers, find_final_norm  # noqa: F401  (re-exported)
from ..schema.names import keeps_generated, parse_positions, prompt_rows
from .layers import hook_target, resolve_layers
from .positions import kept_positions

__all__ = ["ActivationCapture", "to_cpu"]


class ActivationCapture:
    """Register forward hooks on entry, remove exactly those on exit (also on exceptions).

    >>> batch = tok(["2+2=", "Capital of France?"], return_tensors="pt", padding=True)    # left-padded
    >>> width, pads = batch["input_ids"].shape[1], (1 - batch["attention_mask"]).sum(1).tolist()
    >>> with ActivationCapture(model, layers=[0, -1], positions="last_prompt") as cap:
    ...     out = model.generate(**batch, max_new_tokens=8, do_sample=False)
    >>> per_row = cap.batch_activations(pads, [width - p for p in pads], gen_lens=[8, 8], prompt_width=width)
    >>> per_row[0][0]["layer_0"].shape, per_row[0][1] == [width - pads[0] - 1]    # (1, hidden), the last prompt token
    (torch.Size([1, 64]), True)

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
        self._prompt_only = not keeps_generated(self.positions)
        self._prompt_rows = prompt_rows(self.positions)   # "all" | "last" | "none" rows of the prompt call
        self._joined = {}

    def _hook_targets(self):
        return [(name, *hook_target(self.model, name)) for name in self.names]

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
        elif self._prompt_rows == "none":
            # keep only the shape, so a 1-token answer still yields an empty (0, hidden) tensor
            self._steps[name].append(hidden.new_empty((hidden.shape[0], 0, hidden.shape[-1])))
            return
        hidden = hidden.detach()
        if self._prompt_rows == "last" and not call:
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
        return {"last": prompt_width - 1, "none": prompt_width}.get(self._prompt_rows, 0)

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


def to_cpu(tensors):
    """CPU copies that own their bytes; from a GPU, one device-to-host copy (one sync) for all of
    them when their shapes allow stacking, instead of one per tensor."""
    same = len({(t.shape, t.dtype, t.device) for t in tensors}) == 1
    if len(tensors) > 1 and same and tensors[0].device.type != "cpu":
        return [t.clone() for t in torch.stack(tensors).cpu().unbind(0)]
    return [t.cpu() if t.device.type != "cpu" else (t.clone() if t._is_view() else t) for t in tensors]
