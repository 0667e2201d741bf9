"""Reproducible sampling: temperature / top-k / top-p with one random stream per prompt.

Public names:
    row_seed(seed, key) -> int            the seed of one prompt's random stream
    Sampler(temperature, top_k, top_p, seed, keys)
        .pick(logits, indices) -> tokens  one sampled token per row (logits (B, vocab))
        .logits_processor(indices)        the same choice inside model.generate (greedy mode)

Example:
    >>> import torch
    >>> logits = torch.randn(1, 300, generator=torch.Generator().manual_seed(0))   # (1, vocab) of prompt "q2/0"
    >>> sampler = Sampler(temperature=0.7, top_k=0, top_p=0.95, seed=1, keys=["q1/0", "q2/0"])
    >>> sampler.pick(logits, indices=[1])
    tensor([271])
    >>> Sampler(temperature=0.7, top_k=0, top_p=0.95, seed=1, keys=["q2/0"]).pick(logits, indices=[0])   # same stream
    tensor([271])

Why: model.generate(do_sample=True) draws every row of a batch from torch's global random
generator, so an answer depends on which questions shared its batch, on the batch size and on
what ran before (a --resume). Here each prompt has its own generator, seeded from (seed, key)
(the runner's key is the question id and the sample index), and draws exactly one uniform number
per token it generates. The same seed thus gives the same answers whatever the batching, the
decoding path (continuous batching or model.generate) or the resume, up to the last float bits
of the logits (which can, rarely, flip a token).

The distribution is transformers' own: its TemperatureLogitsWarper, TopKLogitsWarper and
TopPLogitsWarper, applied in generate()'s order, then a draw from the softmax by inverse CDF
(the token whose cumulative probability first exceeds u * total). Unlike model.generate, no
top_k=50 default is added: top_k=0 and top_p=1.0 mean "off".
"""
import hashlib

import torch
from transformers.generation.logits_process import (
    LogitsProcessor,
    LogitsProcessorList,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)


def row_seed(seed, key):
    """A 63-bit generator seed from the run's seed and a prompt's key (stable across processes)."""
    digest = hashlib.sha256(f"{seed}\x1f{key}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


class Sampler:
    """Sample one token per row, each prompt (by index into `keys`) from its own random stream."""

    def __init__(self, temperature, top_k, top_p, seed, keys):
        warpers = [TemperatureLogitsWarper(temperature)]
        if top_k:
            warpers.append(TopKLogitsWarper(top_k=top_k))
        if top_p < 1.0:
            warpers.append(TopPLogitsWarper(top_p=top_p))
        self._warpers = LogitsProcessorList(warpers)
        # CPU generators: the uniforms do not depend on the device, and cost no kernel launch
        self._generators = [torch.Generator().manual_seed(row_seed(seed, key)) for key in keys]

    def pick(self, logits, indices):
        """Tokens (B,) on logits' device: row i samples for prompt indices[i] from logits[i]."""
        scores = self._warpers(None, logits.float())                        # (B, vocab), -inf = excluded
        cdf = scores.softmax(-1).cumsum(-1)                                 # (B, vocab)
        u = torch.cat([torch.rand(1, generator=self._generators[i], dtype=torch.float64) for i in indices])
        target = (u.to(device=cdf.device, dtype=cdf.dtype) * cdf[:, -1]).unsqueeze(-1)   # (B, 1)
        tokens = torch.searchsorted(cdf, target, right=True).clamp_(max=cdf.shape[-1] - 1)
        return tokens[:, 0]

    def logits_processor(self, indices):
        """A LogitsProcessorList for greedy model.generate whose argmax is this sampler's token
        (rows of the generate batch are the prompts `indices`)."""
        return LogitsProcessorList([_ForceSampled(self, list(indices))])


class _ForceSampled(LogitsProcessor):
    """Keeps only the sampled token (every other score -inf), so greedy decoding picks it."""

    def __init__(self, sampler, indices):
        self.sampler, self.indices = sampler, indices

    def __call__(self, input_ids, scores):
        tokens = self.sampler.pick(scores, self.indices)
        forced = torch.full_like(scores, float("-inf"))
        return forced.scatter_(1, tokens[:, None], 0.0)
