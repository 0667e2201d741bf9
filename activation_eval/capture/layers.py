"""Layer names of a decoder-only model and the one parser of a layer request.

Public names:
    layer_names(model) -> ["embeddings", "layer_0", ..., "final_norm"]
    resolve_layers(model, layers) -> [name, ...]   (validates; names, ints, module paths)
    hook_target(model, name) -> (module, "pre" | "post")   where a canonical name's tensor is hooked
    find_decoder_layers(model) -> (path, ModuleList), find_final_norm(model) -> (path, module) or (None, None)
                       from activation_eval.architecture (the one lookup, shared with the logit lens)
    CaptureError       the model's layers cannot be found (= architecture.ArchitectureError)

Example:
    >>> layer_names(model)                        # a 3-layer Llama
    ['embeddings', 'layer_0', 'layer_1', 'layer_2', 'final_norm']
    >>> resolve_layers(model, "embeddings,-1")    # ints count from the end: -1 is the last decoder layer
    ['embeddings', 'layer_2']
"""
from ..architecture import ArchitectureError, find_decoder_layers, find_final_norm
from ..schema.names import EMBEDDINGS, FINAL_NORM, decoder_index, layer_name, model_layer_names

__all__ = ["layer_names", "resolve_layers", "hook_target", "find_decoder_layers", "find_final_norm", "CaptureError"]

CaptureError = ArchitectureError     # one error for "this model's layers cannot be found" in capture and lens


def layer_names(model):
    """Every canonical name this model offers, in forward order."""
    _, layers = find_decoder_layers(model)
    return model_layer_names(len(layers), final_norm=find_final_norm(model)[1] is not None)


def hook_target(model, name):
    """(module, "pre" | "post"): "embeddings" is the first decoder layer's input (a pre-hook), every
    other name a module's output (a post-hook): decoder layer i, the final norm, or a module path."""
    _, layers = find_decoder_layers(model)
    index = decoder_index(name)
    if name == EMBEDDINGS:
        return layers[0], "pre"
    if name == FINAL_NORM:
        return find_final_norm(model)[1], "post"
    if index is not None:
        return layers[index], "post"
    return model.get_submodule(name), "post"


def resolve_layers(model, layers=None):
    """Validate and normalise a layer request into canonical names / module paths.

    layers: None (embeddings + every decoder layer), a comma-separated string, or a list of
    names ("embeddings", "layer_3", "final_norm"), ints (negative count from the end: -1 is the
    last decoder layer) and module paths ("model.layers.3.mlp"). Raises ValueError listing the
    valid names before any hook exists.
    """
    valid = layer_names(model)
    n_layers = sum(decoder_index(name) is not None for name in valid)
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
        return layer_name(item % n_layers)
    if item in valid:
        return item
    if item and item in modules:
        return item
    raise ValueError(f"unknown layer {item!r}; valid names: {_describe(valid)}, "
                     f"or a module path from model.named_modules() such as 'model.layers.0.mlp'")


def _describe(valid):
    layers = [v for v in valid if decoder_index(v) is not None]
    rest = [v for v in valid if decoder_index(v) is None]
    span = f"{layers[0]} .. {layers[-1]}" if len(layers) > 1 else ", ".join(layers)
    return ", ".join(rest[:1] + [span] + rest[1:]) + f" (or ints {-len(layers)} .. {len(layers) - 1})"

