"""RowCapture: activation capture under continuous batching (rows join and leave between forwards).

Public names:
    RowCapture(model, layers=None, positions="all", dtype=None, *, width, max_steps)
        an ActivationCapture whose forwards are announced by the decoding loop (route_prefix,
        route_prefill, route_step); finish(question, slot, prompt_len, gen_len) -> (acts, kept)

Example:
    (continuous.decode is the decoding loop that announces each forward; two prompts, two slots)
    >>> from activation_eval.capture.continuous import decode
    >>> ids = [tok("2+2=")["input_ids"], tok("Capital of France?")["input_ids"]]
    >>> with RowCapture(model, layers=[0, -1], width=2, max_steps=7) as cap:     # max_new_tokens - 1 steps
    ...     answers = list(decode(model, ids, 2, 8, {tok.eos_token_id}, tok.pad_token_id, capture=cap))
    >>> first = answers[0]                                # the first answer to end (a continuous.Finished)
    >>> i, tokens, (acts, kept) = first.index, first.tokens, first.captured     # captured: from cap.finish(...)
    >>> list(acts), acts["layer_2"].shape == (len(ids[i]) + len(tokens) - 1, 64), kept[:3]
    (['layer_0', 'layer_2'], True, [0, 1, 2])
"""
import torch

from ..schema.names import keeps_generated
from .hooks import ActivationCapture, to_cpu
from .layers import CaptureError
from .positions import kept_positions

__all__ = ["RowCapture"]


class RowCapture(ActivationCapture):
    """ActivationCapture for continuous batching, where rows join and leave the batch between forwards.

    See the module docstring's example (continuous.decode is the decoding loop that uses it).
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
        self._keeps_steps = keeps_generated(self.positions)
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
            if self._prompt_rows == "all":                   # "last": each prompt has a token after the prefix
                self._prefix[name] = hidden[0].clone()
        elif self._prompt_rows != "none":
            # copies, not views: a later module may write into this output in place (the copy is
            # ~0.1% of a call), and a view would keep the whole batch's output alive
            last = self._prompt_rows == "last"
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
        return dict(zip(self.names, to_cpu(fulls))), kept

    def release(self):
        super().release()
        self._prefix, self._prompts, self._buffers, self._route, self._step_index = {}, {}, {}, None, None

