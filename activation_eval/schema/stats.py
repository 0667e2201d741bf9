"""The statistics results: one record (--file), a folder of records (--directory), two records (--compare).

analysis/stats.py builds them; the --json output of each mode is its result, its fields as keys,
plus "format_version" (and "plots"). Every statistic is float64; a norm is the L2 norm of one
position's activation vector (a row of a layer's (positions, hidden) tensor).

Public names:
    TensorStats         statistics of one layer of one record
    FileResult          --file: one record's metadata and per-layer statistics
    DirectoryLayer      --directory: one layer's statistics streamed over every record
    DirectoryFile       --directory: one record's summary
    SkippedFile         --directory: a record that could not be read, and why
    DirectoryResult     --directory: the whole result
    Similarity          --compare: cosine similarity and L2 distance of one alignment
    CompareLayer        --compare: one layer's three alignments
    CompareResult       --compare: the whole result
    FORMAT_VERSION, CONTRACTS

Example:
    >>> s = Similarity(cosine=1.0, l2_distance=0.0, positions=None)
    >>> CompareLayer(last_prompt_token=s, prompt_mean=s, common_prefix=None).last_prompt_token.cosine
    1.0
"""
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar

FORMAT_VERSION = 1


@dataclass(frozen=True, kw_only=True)
class TensorStats:
    """Statistics of one activation tensor (positions, hidden); None for an empty one."""
    shape: Annotated[list[int], "(positions, hidden)"]
    mean: Annotated[float | None, "mean of every value"]
    std: Annotated[float | None, "population standard deviation (ddof 0) of every value"]
    min: Annotated[float | None, "smallest value"]
    max: Annotated[float | None, "largest value"]
    position_norm_mean: Annotated[float | None, "mean of the positions' norms"]
    position_norm_std: Annotated[float | None, "standard deviation of the positions' norms"]
    l2_norm: Annotated[float | None, "norm of the whole tensor"]
    position_norm_q25: Annotated[float | None, "25th percentile of the positions' norms"]
    position_norm_median: Annotated[float | None, "median of the positions' norms"]
    position_norm_q75: Annotated[float | None, "75th percentile of the positions' norms"]


@dataclass(frozen=True, kw_only=True)
class FileResult:
    """One record: its metadata and every layer's statistics."""
    format_version: ClassVar[int] = FORMAT_VERSION
    file: Annotated[str | None, "the record file"]
    model: Annotated[Any, "the record's model"]
    prompt: Annotated[Any, "the prompt"]
    response: Annotated[Any, "the response"]
    timestamp: Annotated[Any, "when it was generated"]
    num_prompt_tokens: Annotated[int, "prompt tokens as fed"]
    num_generated_tokens: Annotated[int, "generated tokens"]
    num_positions: Annotated[int, "positions kept"]
    dtype: Annotated[str | None, "the activations' dtype"]
    model_info: Annotated[Any, "the record's model summary"]
    grading: Annotated[dict[str, Any] | None, "the record's grading entry (the results row's verdict), if any"]
    layers: Annotated[dict[str, TensorStats], "per layer, in the record's order"]


@dataclass(frozen=True, kw_only=True)
class DirectoryLayer:
    """One layer's statistics over every record read (streamed: one record in memory at a time)."""
    files: Annotated[int, "records holding the layer"]
    positions: Annotated[int, "positions (rows) over those records"]
    mean: Annotated[float | None, "mean of every value"]
    std: Annotated[float | None, "population standard deviation of every value"]
    min: Annotated[float | None, "smallest value"]
    max: Annotated[float | None, "largest value"]
    position_norm_mean: Annotated[float | None, "mean of the positions' norms"]
    position_norm_std: Annotated[float | None, "standard deviation of the positions' norms"]
    position_norm_q25: Annotated[float | None, "25th percentile of the positions' norms"]
    position_norm_median: Annotated[float | None, "median of the positions' norms"]
    position_norm_q75: Annotated[float | None, "75th percentile of the positions' norms"]
    norm_quantiles_from: Annotated[int, "norms the quartiles come from: all, or a uniform sample of NORM_SAMPLE_CAP"]


@dataclass(frozen=True, kw_only=True)
class DirectoryFile:
    """One record read."""
    file: Annotated[str, "its path relative to the folder (a shard's record: <shard>#<row>)"]
    model: Annotated[Any, "the record's model"]
    prompt_tokens: Annotated[int, "prompt tokens"]
    generated_tokens: Annotated[int, "generated tokens"]
    positions: Annotated[int, "positions kept"]
    layers: Annotated[int, "layers held"]
    correct: Annotated[Any, "its verdict (the run's results row's; outside a run the record's grading)"]


@dataclass(frozen=True, kw_only=True)
class SkippedFile:
    """A record that could not be read or analysed (skipped whole)."""
    file: Annotated[str, "its path (or its row) relative to the folder"]
    error: Annotated[str, "why"]


@dataclass(frozen=True, kw_only=True)
class DirectoryResult:
    """Every record of a folder or run folder: per-layer aggregates and a per-record summary."""
    format_version: ClassVar[int] = FORMAT_VERSION
    directory: Annotated[str, "the folder"]
    is_run: Annotated[bool, "whether it is a run folder (results.jsonl)"]
    files_found: Annotated[int, "records found"]
    files_read: Annotated[int, "records read (at most --limit)"]
    skipped: Annotated[int, "records that could not be read"]
    errors: Annotated[list[SkippedFile], "those records, and why"]
    layers: Annotated[dict[str, DirectoryLayer], "per layer"]
    files: Annotated[list[DirectoryFile], "per record read"]


@dataclass(frozen=True, kw_only=True)
class Similarity:
    """Cosine similarity and L2 distance of the two records' vectors in one alignment."""
    cosine: Annotated[float | None, "cosine similarity (None: a zero vector)"]
    l2_distance: Annotated[float, "L2 distance"]
    positions: Annotated[int | None, "common_prefix: the positions averaged over (else None)"]


@dataclass(frozen=True, kw_only=True)
class CompareLayer:
    """One layer of two records, three alignments (None: not comparable, the notes say why)."""
    last_prompt_token: Annotated[Similarity | None, "the row at each record's last prompt token"]
    prompt_mean: Annotated[Similarity | None, "the mean over each record's kept prompt positions"]
    common_prefix: Annotated[Similarity | None, "each position of the shared token prefix, averaged"]


@dataclass(frozen=True, kw_only=True)
class CompareResult:
    """Two records compared layer by layer."""
    format_version: ClassVar[int] = FORMAT_VERSION
    files: Annotated[list[str] | None, "the two record files, A and B (None: records compared in memory)"]
    num_prompt_tokens: Annotated[list[int], "prompt tokens of A and B"]
    num_tokens: Annotated[list[int], "tokens (prompt + generated) of A and B"]
    common_prefix_tokens: Annotated[int, "tokens of the prefix A and B share"]
    notes: Annotated[list[str], "what was compared when the records differ"]
    layers: Annotated[dict[str, CompareLayer], "per layer both records hold"]


CONTRACTS = (FileResult, TensorStats, DirectoryResult, DirectoryLayer, DirectoryFile, SkippedFile, CompareResult,
             CompareLayer, Similarity)
