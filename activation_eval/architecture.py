"""Where a decoder-only model keeps its decoder layers and its final norm: the one lookup that
capture (which hooks them) and the logit lens (which projects through the norm) both use.

A leaf module: it imports nothing of the project, so every room may import it (tests/test_layout.py).

Public names:
    FINAL_NORM_NAMES                 attribute names a final norm goes by ("norm", "ln_f", ...)
    ArchitectureError                ValueError: the decoder layers or the final norm cannot be found
    find_decoder_layers(model) -> (path, ModuleList)   the longest list of same-class blocks
    find_final_norm(model) -> (path, module) or (None, None)   the norm next to the layer list
    final_norm_module(model) -> module     find_final_norm's module, or ArchitectureError

Example:
    >>> find_decoder_layers(model)[0], find_final_norm(model)[0]     # a Llama-style model
    ('model.layers', 'model.norm')
    >>> from transformers import AutoConfig, AutoModelForCausalLM
    >>> opt_model = AutoModelForCausalLM.from_config(AutoConfig.for_model(
    ...     "opt", hidden_size=16, ffn_dim=32, num_hidden_layers=2, num_attention_heads=2, word_embed_proj_dim=16))
    >>> find_final_norm(opt_model)[0]                                # OPT keeps both in its decoder
    'model.decoder.final_layer_norm'
"""
from torch import nn

__all__ = ["FINAL_NORM_NAMES", "ArchitectureError", "find_decoder_layers", "find_final_norm", "final_norm_module"]

FINAL_NORM_NAMES = ("norm", "ln_f", "final_layer_norm", "final_layernorm", "norm_f", "final_norm")


class ArchitectureError(ValueError):
    """The model's decoder layers or final norm cannot be found."""


def find_decoder_layers(model):
    """The ModuleList of decoder layers: the longest list of same-class blocks (path, module);
    with config.num_hidden_layers, a list of that length wins."""
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
        raise ArchitectureError(
            f"cannot find the decoder layers of {type(model).__name__}: no nn.ModuleList of blocks. "
            f"Pass module paths instead, e.g. one of: {suggest_paths(model)}")
    return best[1], best[2]


def find_final_norm(model):
    """The norm applied after the last decoder layer, a sibling of the layer list: (path, module);
    a child named in FINAL_NORM_NAMES wins over one whose class name holds "norm" (the last such).
    (None, None) when there is none."""
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


def final_norm_module(model):
    """The final norm's module (find_final_norm), or ArchitectureError naming what was looked for."""
    path, module = find_final_norm(model)
    if module is None:
        layers_path, _ = find_decoder_layers(model)
        raise ArchitectureError(f"cannot find the final norm of {type(model).__name__}: no child of "
                                f"{layers_path.rpartition('.')[0] or 'the model'} next to its decoder layers "
                                f"named {', '.join(FINAL_NORM_NAMES)} or of a norm class")
    return module


def suggest_paths(model, limit=8):
    """A few module paths of `model` to name in an error message."""
    paths = [p for p, m in model.named_modules() if p and p.count(".") <= 3 and not isinstance(m, nn.ModuleList)]
    return ", ".join(paths[:limit]) or "(the model has no sub-modules)"
