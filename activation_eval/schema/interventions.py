"""The interventions a run answered under (steering, directional ablation): how run_config.json,
summary.json, every results row and every record name them.

A plain run has none: run_config.json and summary.json say "interventions": [] (a folder written
before they existed reads as []), and its rows and records have no "interventions" key at all, so
that they are unchanged bit for bit. A steered run's rows and records each carry the list.

Public names:
    INTERVENTIONS                      "interventions": the key in run_config, summary, rows and records
    FORMAT_VERSION, InterventionEntry  one intervention as JSON (capture/intervene.Intervention.entry())
    interventions_of(obj) -> [entry]   the entries a run_config, summary, row or record carries ([] if none)
    intervention_fields(record) -> {}  the row keys a record's interventions give: {"interventions": [...]},
                                       or {} for a plain record (its row unchanged)
    describe_interventions(entries) -> str   'add layer_3 alpha 4.0 at all (sha 1a2b3c4d)', or 'none'
    interventions_differ(stored, now) -> str  how two lists differ in words ("" when they match): kind,
                                       layer, positions, alpha and checksum count, not the file's place

Example:
    >>> entry = {"kind": "add", "layer": "layer_3", "positions": "all", "alpha": 4.0,
    ...          "direction_sha256": "1a2b3c4d" + "0" * 56, "direction_source": "dirs/truth.safetensors",
    ...          "hidden_size": 64}
    >>> describe_interventions([entry]), interventions_of({"id": "q1"})
    ('add layer_3 alpha 4.0 at all (sha 1a2b3c4d)', [])
    >>> interventions_differ([entry], [])
    'interventions: stored add layer_3 alpha 4.0 at all (sha 1a2b3c4d), now none'
"""
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal, TypedDict

FORMAT_VERSION = 1
INTERVENTIONS = "interventions"
_COMPARED = ("kind", "layer", "positions", "alpha", "direction_sha256")


class InterventionEntry(TypedDict):
    """One edit made while answering (capture/intervene.py); a list of them applies in order."""
    kind: Annotated[Literal["add", "ablate"], "add: output + alpha * u (steering); ablate: output - (output . u) u"]
    layer: Annotated[str, "the edited layer's canonical name (embeddings = the first decoder layer's input, "
                          "layer_i = decoder layer i's output, final_norm) or module path"]
    positions: Annotated[Literal["all", "prompt", "generated"], "where it applies: every position, the prompt's, "
                         "or the generated tokens' (log-likelihood scoring: the scored continuation's)"]
    alpha: Annotated[float | None, "add: the length of the added vector, in the residual's own units (None: ablate)"]
    direction_sha256: Annotated[str, "sha256 of the unit direction's float32 little-endian bytes (any scale of "
                                     "the same direction gives the same checksum)"]
    direction_source: Annotated[str, "where the direction came from: its file's absolute path (--steer, --ablate, "
                                     "model_args), or what the code that made it said (e.g. the causal check)"]
    hidden_size: Annotated[int, "the direction's number of components"]


CONTRACTS = (InterventionEntry,)


def interventions_of(obj: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """The intervention entries `obj` (run_config.json, summary.json, a row or a record) carries: [] when
    it has none (a plain run, or a folder written before interventions existed)."""
    entries = (obj or {}).get(INTERVENTIONS)
    return [dict(e) for e in entries if isinstance(e, Mapping)] if isinstance(entries, list) else []


def intervention_fields(record: Mapping[str, Any]) -> dict[str, Any]:
    """{"interventions": entries} for a results row when its record was made under interventions, else {}."""
    entries = interventions_of(record)
    return {INTERVENTIONS: entries} if entries else {}


def describe_interventions(entries: Sequence[Mapping[str, Any]]) -> str:
    """The entries in a few words, in order ('; ' between them), or 'none'."""
    if not entries:
        return "none"
    words = []
    for e in entries:
        alpha = f" alpha {e.get('alpha')}" if e.get("kind") == "add" else ""
        words.append(f"{e.get('kind')} {e.get('layer')}{alpha} at {e.get('positions')} "
                     f"(sha {str(e.get('direction_sha256'))[:8]})")
    return "; ".join(words)


def interventions_differ(stored: Sequence[Mapping[str, Any]] | None, now: Sequence[Mapping[str, Any]]) -> str:
    """'' when both lists make the same edits (kind, layer, positions, alpha, checksum, in order), else
    'interventions: stored <described>, now <described>'."""
    stored = list(stored or [])
    if [[e.get(k) for k in _COMPARED] for e in stored] == [[e.get(k) for k in _COMPARED] for e in now]:
        return ""
    return f"interventions: stored {describe_interventions(stored)}, now {describe_interventions(now)}"
