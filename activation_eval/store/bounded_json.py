"""The one JSON reader of the store and the analysis: every JSON text they read from a file
(results.jsonl rows, run_config.json, summary.json, a shard's record texts and index metadata, a
.safetensors header and the record JSON in it) is parsed here, with limits checked BEFORE the
parse, without recursion.

Public names:
    MAX_DEPTH, MAX_VALUES     the default limits: nesting (checks.MAX_DEPTH, as the unpickler) and
                              values per text (checks.MAX_NODES: bounds the memory one text can make)
    JSONLimitError(ValueError)    a text nests deeper or holds more values than allowed
    loads(text, max_depth=MAX_DEPTH, max_values=MAX_VALUES, max_bytes=None) -> value
                              one JSON text (str, or bytes decoded as strict UTF-8: never UTF-16/32);
                              ValueError (JSONDecodeError, UnicodeDecodeError, JSONLimitError) otherwise,
                              never RecursionError
    loads_each(texts, ...) -> [value]    each text parsed alone (none can spill into the next)
    loads_lines(data, ...) -> (values, bad)   a JSON-lines text (bytes): lines split on "\\n" only
                              (U+2028, U+2029, U+0085 inside strings are valid JSON); [(line number,
                              value)] of the non-blank lines that parse, in order, and [(line number,
                              reason)] of those that do not (1-based)
    check_limits(text, max_depth, max_values)   the pre-check alone (JSONLimitError)
    gc_paused                 decorator: the cyclic GC paused while the function builds many objects

Example:
    >>> loads('{"a": [1, 2]}')
    {'a': [1, 2]}
    >>> loads("[" * 101 + "]" * 101)
    Traceback (most recent call last):
    ...
    activation_eval.store.bounded_json.JSONLimitError: JSON nesting deeper than 100
    >>> loads_lines(b'{"id": "q1"}\\n{"id": \\n{"id": "q3"}\\n')
    ([(1, {'id': 'q1'}), (3, {'id': 'q3'})], [(2, 'Expecting value: line 1 column 8 (char 7)')])

How the limits are checked without recursion: nesting depth can only reach the number of "[" and
"{" in the text, and the number of values only commas + openers + 1; both counts are str.count
calls (C speed), enough for every ordinary text. Only a text over a limit by those counts gets
the exact check: a vectorised (numpy) scan of its UTF-8 bytes that finds the quotes that open
and close strings (a quote after an even run of backslashes), and counts brackets and commas
outside strings (blocks of 1 MiB, so memory stays small). Wherever a parser can get to in a text
without failing, this count equals its nesting, so a text that passes never makes json recurse
deeper than the limit (json's C scanner recurses once per level: 1000 levels is a RecursionError).

Each line of a JSON-lines text is parsed alone by json's C scanner (never joined with the others:
joining lines into one array let two torn lines parse as rows neither is), as fast as one parse
of the whole file. The garbage collector is paused while parsing: parsed JSON holds no cycles,
and 100k rows would otherwise start dozens of collections (the parse took twice as long).
"""
import gc
import json
import json.decoder
import json.scanner

import numpy as np

from .checks import MAX_DEPTH, MAX_NODES

__all__ = ["MAX_DEPTH", "MAX_VALUES", "JSONLimitError", "loads", "loads_each", "loads_lines", "check_limits"]

MAX_VALUES = MAX_NODES
_BLOCK = 1 << 20                                      # bytes per block of the exact scan (~50 MB of arrays)
_DECODER = json.decoder.JSONDecoder()
_SCAN = json.scanner.make_scanner(_DECODER)  # type: ignore[arg-type]   # the C scanner: (value, end) at a position
_SPACE = json.decoder.WHITESPACE.match  # type: ignore[attr-defined]               # JSON whitespace (also used with an end bound)
_STEP = np.zeros(256, np.int8)                        # +1 for an opener, -1 for a closer
_STEP[list(b"[{")], _STEP[list(b"]}")] = 1, -1
_ITEM = np.zeros(256, bool)                           # openers and commas: at most one value each
_ITEM[list(b"[{,")] = True


class JSONLimitError(ValueError):
    """A JSON text nests deeper, or holds more values, than the reader allows."""


def _exact_counts(data):
    """(deepest nesting, commas + openers + 1) of the UTF-8 bytes `data`, brackets and commas
    inside strings not counted: exact for every prefix of the text that is valid JSON."""
    deepest, items, depth, in_string, backslashes = 0, 1, 0, 0, 0
    raw = np.frombuffer(data, np.uint8)
    for start in range(0, len(raw), _BLOCK):
        b = raw[start:start + _BLOCK]
        quotes, carry = b == 34, backslashes               # '"'; the run of backslashes before the block
        if data.find(b"\\", start, start + len(b)) >= 0:
            # a quote after an odd run of backslashes (counting the last block's) is escaped
            idx = np.arange(len(b), dtype=np.int32)
            last_other = np.maximum.accumulate(np.where(b == 92, -1, idx))
            run = idx - last_other + np.where(last_other < 0, carry, 0)
            quotes[1:] &= run[:-1] % 2 == 0
            backslashes = int(run[-1])
        else:
            backslashes = 0
        if carry % 2:
            quotes[0] = False
        outside = (np.cumsum(quotes, dtype=np.int32) + in_string) % 2 == 0
        steps = _STEP[b] * outside
        levels = np.cumsum(steps, dtype=np.int32)
        deepest, depth = max(deepest, depth + int(levels.max())), depth + int(levels[-1])
        items += int(np.count_nonzero(_ITEM[b] & outside))
        in_string = (in_string + int(np.count_nonzero(quotes))) % 2
    return deepest, items


def check_limits(text, max_depth=MAX_DEPTH, max_values=MAX_VALUES):
    """JSONLimitError unless the JSON text `text` (str, or UTF-8 bytes) nests at most `max_depth`
    deep and holds at most `max_values` values (None: no limit)."""
    if isinstance(text, str):
        openers = text.count("[") + text.count("{")
        commas = text.count(",")
    else:
        openers = text.count(b"[") + text.count(b"{")
        commas = text.count(b",")
    deep = max_depth is not None and openers > max_depth
    many = max_values is not None and openers + commas + 1 > max_values
    if not (deep or many):
        return
    depth, items = _exact_counts(text.encode("utf-8", "surrogatepass") if isinstance(text, str) else bytes(text))
    if max_depth is not None and depth > max_depth:
        raise JSONLimitError(f"JSON nesting deeper than {max_depth}")
    if max_values is not None and items > max_values:
        raise JSONLimitError(f"JSON holding more than {max_values} values")


def _text(text, max_bytes, max_depth, max_values):
    """`text` as a str, its limits checked (on the bytes when it is bytes: no copy is scanned)."""
    if isinstance(text, (bytearray, memoryview)):
        text = bytes(text)
    if not isinstance(text, (str, bytes)):
        raise TypeError(f"JSON text must be str or bytes, not {type(text).__name__}")
    if max_bytes is not None and len(text) > max_bytes:
        raise JSONLimitError(f"a JSON text of {len(text)} bytes, more than the limit of {max_bytes}")
    check_limits(text, max_depth, max_values)
    return text.decode("utf-8") if isinstance(text, bytes) else text    # strict UTF-8: never UTF-16


def gc_paused(function):
    """Decorator: run `function` with the cyclic GC paused (building 100k small dicts or tuples otherwise
    starts dozens of collections that each walk every young object; nothing built here forms a cycle)."""
    def run(*args, **kwargs):
        enabled = gc.isenabled()
        gc.disable()
        try:
            return function(*args, **kwargs)
        finally:
            if enabled:
                gc.enable()
    run.__name__, run.__doc__ = function.__name__, function.__doc__
    return run


@gc_paused
def loads(text, max_depth=MAX_DEPTH, max_values=MAX_VALUES, max_bytes=None):
    """The value of the JSON text `text` (str, or UTF-8 bytes); the limits are checked first.
    ValueError (json.JSONDecodeError, UnicodeDecodeError, JSONLimitError) when it is not one
    JSON value within them; never RecursionError."""
    return _DECODER.decode(_text(text, max_bytes, max_depth, max_values))


@gc_paused
def loads_each(texts, max_depth=MAX_DEPTH, max_values=MAX_VALUES):
    """[loads(t) for t in texts]: each text parsed on its own, so that one text can never spill
    into the next (joining texts into one array would let a crafted text shift every later one)."""
    out = []
    for t in texts:
        out.append(_DECODER.decode(_text(t, None, max_depth, max_values)))
    return out


@gc_paused
def loads_lines(data, max_depth=MAX_DEPTH, max_values=MAX_VALUES):
    """(values, bad) of the JSON-lines bytes `data`: lines are split on b"\\n" only; a line of
    whitespace (str.isspace) is skipped; every other line must be exactly one JSON value within
    the limits. `values`: [(1-based line number, value)] of those that are; `bad`: [(line number,
    reason)] of those that are not (torn, garbled, too deep), both in line order."""
    try:
        text = bytes(data).decode("utf-8")
    except UnicodeDecodeError:
        return _lines_one_by_one(bytes(data), max_depth, max_values)
    values, bad = [], []
    pos, number, size = 0, 0, len(text)
    find = text.find
    while pos <= size:
        number += 1
        nl = find("\n", pos)
        if nl < 0:
            nl = size
        start = _SPACE(text, pos, nl).end()
        if start < nl:
            line = text[start:nl]        # the scanner must not run on past the line's end
            try:
                if (max_depth is not None and line.count("[") + line.count("{") > max_depth) or (
                        max_values is not None and len(line) >= max_values):
                    check_limits(line, max_depth, max_values)     # (the quick bounds inline: 100k rows)
                value, end = _SCAN(line, 0)
            except JSONLimitError as exc:
                bad.append((number, str(exc)))
            except (StopIteration, ValueError):
                _drop_line(bad, number, line)
            else:
                if end == len(line) or _SPACE(line, end).end() == len(line):
                    values.append((number, value))
                else:
                    bad.append((number, f"extra data after the JSON value (column {start - pos + end + 1})"))
        pos = nl + 1
    return values, bad


def _drop_line(bad, number, line):
    """Note why `line` is not a JSON value (the scanner's own error is a bare StopIteration);
    nothing for a line of other whitespace (a form feed, U+2028): blank, as before."""
    if not line.strip():
        return
    try:
        _DECODER.decode(line)
        reason = "not JSON"
    except ValueError as exc:
        reason = str(exc)[:200]
    bad.append((number, reason))


def _lines_one_by_one(data, max_depth, max_values):
    """loads_lines of bytes that are not all UTF-8: each line decoded and parsed alone."""
    values, bad = [], []
    for number, line in enumerate(data.split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            values.append((number, loads(line, max_depth, max_values)))
        except ValueError as exc:
            bad.append((number, str(exc)[:200]))
    return values, bad
