"""The error of bad benchmark input, shared by the benchmark reader, the prompts and the graders.

Public names:
    BenchmarkError  ValueError for any bad benchmark input; the message names the file, row and
                    field, and says how to fix it.

Example:
    >>> from activation_eval.eval.errors import BenchmarkError
    >>> issubclass(BenchmarkError, ValueError)
    True
"""


class BenchmarkError(ValueError):
    """Bad benchmark input: the message names the file/row/field and how to fix it."""
