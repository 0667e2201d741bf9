"""What a benchmark reader may materialise: rows, bytes per cell, bytes in all, JSON nesting; counted
WHILE the file is read, so that a small hostile file (a compression bomb, a 20 MB question, 30M
run-length-encoded rows, 10^5 nested brackets) is refused before it is decoded, not after.

Public names:
    BenchmarkLimits(rows, cell_bytes, total_bytes, depth)   the limits (a frozen dataclass); .hint(name,
                            needed) ends a refusal: a value that reads the file, or that none does
    DEPTH_HARD_MAX          the hard maximum of depth (Python's JSON parser reads no deeper)
    DEFAULT_LIMITS          BenchmarkLimits() with the defaults below
    LIMITS_HELP             what --benchmark_limits takes
    parse_limits(text_or_limits) -> BenchmarkLimits   "rows=5000000,cell_bytes=8MiB" (others keep their default)
    Budget(name, limits)    the count of one read: .rows(n, where), .cell(field, nbytes, where),
                            .total(nbytes, where), .decoded(nbytes, where), .rows_hold(size, rows,
                            fields, where) (decoded bytes that cells can hold); each raises BenchmarkError
                            naming the file, the place, the field and the limit to raise
    value_size(value, max_depth) -> (bytes, depth)   UTF-8 bytes and nesting of a parsed JSON value,
                            without recursion (depth stops counting past max_depth)
    json_depth_at(text, max_depth) -> index or None  where `text` first nests deeper than max_depth
                            (a scan without recursion, to place a RecursionError of json.loads)

Example:
    >>> limits = parse_limits("rows=2000000,cell_bytes=4MiB")
    >>> limits.rows, limits.cell_bytes, limits.total_bytes == DEFAULT_LIMITS.total_bytes
    (2000000, 4194304, True)
    >>> limits.hint("cell_bytes", 20_000_000)
    'if the file is trusted, raise it, e.g. --benchmark_limits cell_bytes=20000000'
    >>> parse_limits("depth=500").hint("depth")
    "no --benchmark_limits depth reads it (at most 500: Python's JSON parser reads no deeper)"
    >>> value_size({"question": "Why?", "choices": ["a", "b"]}, 100)
    (21, 2)

Defaults, and why: rows 1,000,000 (ten times the largest QA benchmarks people evaluate whole,
e.g. TriviaQA's 110k or Natural Questions' 300k; read, a row costs about 1-2 KB of Python objects);
cell_bytes 1 MiB (one question, answer or choices list: about 250k tokens, more than the context
window of the models this tool runs; long-context suites raise it); total_bytes 1 GiB (the cells
read, plus the bytes a compressed Arrow file decompresses to: about 3 GB of Python strings and
rows once read); depth 100 (a benchmark row nests 2-5 levels; the run-folder readers stop at 100 too).
"""
import dataclasses
import re

from .errors import BenchmarkError

__all__ = ["BenchmarkLimits", "DEFAULT_LIMITS", "DEPTH_HARD_MAX", "LIMITS_HELP", "parse_limits", "Budget", "value_size",
           "json_depth_at"]

_UNITS = {"": 1, "b": 1, "k": 10 ** 3, "kb": 10 ** 3, "m": 10 ** 6, "mb": 10 ** 6, "g": 10 ** 9, "gb": 10 ** 9,
          "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40}
LIMITS_HELP = ("what a benchmark file may hold, checked while it is read: rows=N, cell_bytes=N (one field of one "
               "row), total_bytes=N (all cells read, and what compressed Arrow data decompresses to), depth=N "
               "(JSON nesting); sizes may end in KiB, MiB, GiB, e.g. rows=5000000,cell_bytes=8MiB")


@dataclasses.dataclass(frozen=True)
class BenchmarkLimits:
    rows: int = 1_000_000           # rows of the benchmark (all splits read)
    cell_bytes: int = 1 << 20       # UTF-8 bytes of one field of one row (a list: all its items)
    total_bytes: int = 1 << 30      # bytes of all cells read + bytes decompressed from compressed Arrow data
    depth: int = 100                # nesting of a JSON value

    def hint(self, name, needed=None):
        """The end of a refusal: a value of limit `name` that reads the file (at least `needed`, the
        amount the file was found to need, and twice the limit), or, beyond the limit's hard maximum,
        that no value does."""
        value = max(2 * getattr(self, name), needed or 0)
        most = HARD_MAXIMA.get(name)
        if most is not None and value > most:
            if (needed or 0) > most or getattr(self, name) >= most:
                return f"no --benchmark_limits {name} reads it (at most {most:,}: {HARD_REASONS[name]})"
            value = most
        return f"if the file is trusted, raise it, e.g. --benchmark_limits {name}={value}"


DEFAULT_LIMITS = BenchmarkLimits()
DEPTH_HARD_MAX = 500                    # deeper JSON: Python's parser stops near its recursion limit (1000
                                        # frames, less the caller's own)
HARD_MAXIMA = {"depth": DEPTH_HARD_MAX}  # the largest value a limit can take
HARD_REASONS = {"depth": "Python's JSON parser reads no deeper"}


def parse_limits(text):
    """A BenchmarkLimits from "name=N,..." (None: the defaults; a BenchmarkLimits: itself)."""
    if text is None:
        return DEFAULT_LIMITS
    if isinstance(text, BenchmarkLimits):
        return text
    if not isinstance(text, str):
        raise BenchmarkError(f"--benchmark_limits must be text like rows=N,cell_bytes=N, got {type(text).__name__}")
    names = [f.name for f in dataclasses.fields(BenchmarkLimits)]
    values = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        name, eq, value = (s.strip() for s in part.partition("="))
        match = re.fullmatch(r"(\d{1,18})\s*([a-zA-Z]*)", value)
        unit = match and _UNITS.get(match.group(2).lower())
        if not eq or name not in names or not unit or int(match.group(1)) < 1:
            raise BenchmarkError(f"--benchmark_limits: bad entry {part!r}: use name=N with a name among "
                                 f"{', '.join(names)} and N >= 1 (sizes may end in KiB, MiB, GiB), "
                                 "e.g. rows=5000000,cell_bytes=8MiB")
        values[name] = int(match.group(1)) * unit
        if name in HARD_MAXIMA and values[name] > HARD_MAXIMA[name]:
            raise BenchmarkError(f"--benchmark_limits: {name}={values[name]} is beyond the most this reader "
                                 f"supports, {HARD_MAXIMA[name]:,} ({HARD_REASONS[name]})")
    return dataclasses.replace(DEFAULT_LIMITS, **values)


class Budget:
    """The count of one benchmark read against its limits (every check names `name` and the place)."""

    def __init__(self, name, limits):
        self.name, self.limits = name, parse_limits(limits)
        self.row_count = self.cell_total = self.decoded_total = 0

    def _refuse(self, where, what, limit_name, needed):
        limit = getattr(self.limits, limit_name)
        raise BenchmarkError(f"{self.name}: {where}: {what}, over the limit of {limit:,} ({limit_name}); "
                             f"{self.limits.hint(limit_name, needed)}")

    def rows(self, n, where):
        """Count n more rows (or rows announced by the file's metadata, before decoding them)."""
        if self.row_count + n > self.limits.rows:
            self._refuse(where, f"the benchmark has more than {self.limits.rows:,} rows", "rows", self.row_count + n)
        self.row_count += n

    def cell(self, field, nbytes, where):
        """One field of one row holding nbytes bytes (also counted in the total)."""
        if nbytes > self.limits.cell_bytes:
            self._refuse(where, f"field {field!r} holds {nbytes:,} bytes", "cell_bytes", nbytes)
        self.total(nbytes, where)

    def total(self, nbytes, where):
        """nbytes more of cells read."""
        self.cell_total += nbytes
        if self.cell_total > self.limits.total_bytes:
            self._refuse(where, f"the cells read so far hold {self.cell_total:,} bytes", "total_bytes",
                         self.cell_total + self.decoded_total)

    def rows_hold(self, size, rows, fields, where):
        """BenchmarkError unless `size` decoded bytes fit in `rows` rows of `fields` cells of at most
        cell_bytes each (+ 64 bytes of offsets and validity per cell, + 1 MiB): checked before decoding
        data that decompresses (a small file must not first grow to gigabytes, then be refused)."""
        if size > rows * fields * (self.limits.cell_bytes + 64) + (1 << 20):
            needed = -(-size // max(1, rows * fields))          # a cell_bytes that holds it
            raise BenchmarkError(f"{self.name}: {where}: decompresses to {size:,} bytes, more than {rows:,} rows can "
                                 f"hold with at most {self.limits.cell_bytes:,} bytes a cell (cell_bytes); "
                                 f"{self.limits.hint('cell_bytes', needed)}")

    def decoded(self, nbytes, where):
        """nbytes more that compressed data decompresses to (checked before decompressing)."""
        self.decoded_total += nbytes
        if self.decoded_total > self.limits.total_bytes:
            self._refuse(where, f"compressed data that decompresses to {self.decoded_total:,} bytes",
                         "total_bytes", self.decoded_total)


def value_size(value, max_depth):
    """(UTF-8 bytes of the strings + 8 per other scalar, nesting depth) of a parsed JSON value, without
    recursion; the walk stops once the depth passes max_depth (the depth returned is then max_depth + 1)."""
    size, depth, stack = 0, 0, [(value, 0)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, str):
            size += len(item) if item.isascii() else len(item.encode("utf-8", "surrogatepass"))
        elif isinstance(item, (dict, list)):
            depth = max(depth, level + 1)
            if depth > max_depth:
                return size, depth
            children = item.values() if isinstance(item, dict) else item
            if isinstance(item, dict):
                size += sum(len(k) for k in item)
            stack.extend((child, level + 1) for child in children)
        else:
            size += 8
    return size, depth


_JSON_TOKENS = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]', re.S)


def json_depth_at(text, max_depth):
    """The index in `text` of the first bracket nested deeper than max_depth (strings skipped), or None."""
    depth = 0
    for match in _JSON_TOKENS.finditer(text):
        char = text[match.start()]
        if char in "[{":
            depth += 1
            if depth > max_depth:
                return match.start()
        elif char in "]}":
            depth -= 1
    return None
