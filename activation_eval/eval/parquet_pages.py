"""The page headers of a parquet column chunk, read without decoding a page: what each page says it
decompresses to. A parquet reader allocates each page at the size its header declares, whatever the
footer claims, so a footer that understates a chunk (100 bytes for a 629 MB page) must be checked
against the pages themselves before a page is decompressed.

Public names:
    chunk_uncompressed(f, file_size, column, max_header) -> bytes
        the uncompressed sizes the page headers of one column chunk declare, plus the headers (what
        an honest footer's total_uncompressed_size holds; `column`:
        pyarrow's ColumnChunkMetaData; the chunk is walked over the byte range pyarrow reads)
    PageHeaderError     a page header that cannot be read (corrupt, or larger than max_header)

Example:
    >>> import io, pyarrow as pa, pyarrow.parquet as pq
    >>> buf = io.BytesIO()
    >>> pq.write_table(pa.table({"q": ["x" * 5000]}), buf, compression="zstd", use_dictionary=False)
    >>> size = len(buf.getvalue())
    >>> column = pq.ParquetFile(io.BytesIO(buf.getvalue())).metadata.row_group(0).column(0)
    >>> chunk_uncompressed(buf, size, column, 1 << 20) >= 5000
    True

Thrift compact protocol (parquet.thrift's PageHeader): field 2 uncompressed_page_size, field 3
compressed_page_size (i32 zigzag varints); every other field is skipped by type, nesting bounded.
"""
__all__ = ["chunk_uncompressed", "PageHeaderError"]

_FIRST_READ = 1 << 16           # bytes read for a page header at first (statistics make some larger)
_MAX_NESTING = 32               # structs and lists inside a page header (the format nests 3 deep)
_FIXED = {3: 1, 4: None, 5: None, 6: None, 7: 8}   # byte; i16, i32, i64 are varints; double 8 bytes


class PageHeaderError(ValueError):
    """A page header that is corrupt, or larger than the bound it is read with."""


class _Truncated(Exception):
    """The header runs past the bytes read so far (read more, up to max_header)."""


class _Reader:
    def __init__(self, data):
        self.data, self.pos = data, 0

    def byte(self):
        if self.pos >= len(self.data):
            raise _Truncated
        self.pos += 1
        return self.data[self.pos - 1]

    def varint(self):
        value, shift = 0, 0
        while True:
            b = self.byte()
            value |= (b & 0x7F) << shift
            if not b & 0x80:
                return value
            shift += 7
            if shift > 63:
                raise PageHeaderError("a varint longer than 10 bytes")

    def zigzag(self):
        n = self.varint()
        return (n >> 1) ^ -(n & 1)

    def skip_bytes(self, n):
        if n < 0:
            raise PageHeaderError("a negative length")
        if self.pos + n > len(self.data):
            raise _Truncated
        self.pos += n

    def skip(self, kind, depth):
        """Skip one value of compact type `kind`."""
        if depth > _MAX_NESTING:
            raise PageHeaderError(f"nested deeper than {_MAX_NESTING} levels")
        if kind in (1, 2):                          # bool: the value is in the type (fields)
            return
        if kind in _FIXED:
            return self.skip_bytes(_FIXED[kind]) if _FIXED[kind] else self.varint()
        if kind == 8:                               # binary / string
            return self.skip_bytes(self.varint())
        if kind in (9, 10):                         # list / set
            head = self.byte()
            count = head >> 4 if head >> 4 != 15 else self.varint()
            for _ in range(count):
                if head & 0x0F in (1, 2):           # a bool in a list takes one byte
                    self.skip_bytes(1)
                else:
                    self.skip(head & 0x0F, depth + 1)
            return
        if kind == 11:                              # map
            count = self.varint()
            types = self.byte() if count else 0
            for _ in range(count):
                self.skip(types >> 4, depth + 1)
                self.skip(types & 0x0F, depth + 1)
            return
        if kind == 12:
            return self.struct(depth + 1, {})
        raise PageHeaderError(f"an unknown field type {kind}")

    def struct(self, depth, wanted):
        """{field id: i32/i64 value} of the fields in `wanted` of one struct; the rest skipped."""
        found, last = {}, 0
        while True:
            head = self.byte()
            kind = head & 0x0F
            if kind == 0:
                return found
            last = last + (head >> 4) if head >> 4 else self.zigzag()
            if last in wanted and kind in (5, 6):
                found[last] = self.zigzag()
            else:
                self.skip(kind, depth)


def _page_sizes(data):
    """(header length, uncompressed size, compressed size) of the page header at the start of `data`."""
    reader = _Reader(data)
    fields = reader.struct(0, {2, 3})
    if 2 not in fields or 3 not in fields:
        raise PageHeaderError("a page header without its sizes")
    if fields[2] < 0 or fields[3] < 0:
        raise PageHeaderError("a negative page size")
    return reader.pos, fields[2], fields[3]


def _header_at(f, pos, end, max_header):
    size = _FIRST_READ
    while True:
        f.seek(pos)
        data = f.read(min(size, end - pos))
        try:
            return _page_sizes(data)
        except _Truncated:
            if len(data) < size or size >= max_header:
                raise PageHeaderError(f"a page header at byte {pos:,} runs past "
                                      f"{'the column chunk' if len(data) < size else f'{max_header:,} bytes'}") from None
            size = min(2 * size, max_header)


def chunk_uncompressed(f, file_size, column, max_header):
    """Sum of the uncompressed page sizes (and page headers) of one column chunk, walking its page headers over the range
    pyarrow reads (from the dictionary page, or the first data page, for total_compressed_size bytes,
    within the file); `f` a binary file object. PageHeaderError if a header is corrupt or too large."""
    start = column.data_page_offset
    if column.has_dictionary_page and 0 < column.dictionary_page_offset < start:
        start = column.dictionary_page_offset
    end = min(file_size, start + max(0, column.total_compressed_size))
    if start < 0:
        raise PageHeaderError("a negative page offset")
    total, pos = 0, start
    while pos < end:
        length, uncompressed, compressed = _header_at(f, pos, end, max_header)
        total += length + uncompressed              # as the footer counts: headers and pages
        pos += length + compressed
    return total
