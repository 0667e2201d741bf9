"""Dtype names: the one table of every name a dtype goes by in this project.

A leaf module (imports nothing of the project, only torch), so that the store, the models, the
capture and the command line all read the same table (tests/test_layout.py).

Public names:
    TORCH_DTYPES        {torch attribute name: dtype} of every numeric dtype (no quantized ones):
                        what a record may hold, and how pickles name dtypes ("torch", "float16")
    FLOAT_DTYPES        {"float32", "bfloat16", "float16": dtype}: what a user picks for the model
                        (--dtype, besides "auto") and for saved activations (--activation_dtype)
    SAFETENSORS_DTYPES  {safetensors code: dtype}, in the order safetensors' writer sorts tensors
    SAFETENSORS_CODES   {dtype: safetensors code}, its inverse
    float_dtype(name, what) -> torch dtype     a FLOAT_DTYPES name, or ValueError naming the choices

Example:
    >>> float_dtype("bfloat16", "--activation_dtype")
    torch.bfloat16
    >>> SAFETENSORS_CODES[torch.float16], TORCH_DTYPES["int8"]
    ('F16', torch.int8)
"""
import torch

__all__ = ["TORCH_DTYPES", "FLOAT_DTYPES", "SAFETENSORS_DTYPES", "SAFETENSORS_CODES", "float_dtype"]

# numeric torch dtypes (no quantized ones); a torch without one of them leaves it out
TORCH_DTYPES = {name: getattr(torch, name) for name in (
    "bool", "uint8", "int8", "int16", "int32", "int64", "uint16", "uint32", "uint64", "float16",
    "bfloat16", "float32", "float64", "complex64", "complex128", "float8_e4m3fn", "float8_e5m2",
    "float8_e4m3fnuz", "float8_e5m2fnuz", "float8_e8m0fnu") if hasattr(torch, name)}

FLOAT_DTYPES = {name: TORCH_DTYPES[name] for name in ("float32", "bfloat16", "float16")}

# safetensors dtype codes, in the order safetensors' writer sorts tensors (then by name); the
# same table reads them back. float4 (packed, shape rule differs) is left out.
SAFETENSORS_DTYPES = {
    "U64": torch.uint64, "I64": torch.int64, "F64": torch.float64, "C64": torch.complex64,
    "F32": torch.float32, "U32": torch.uint32, "I32": torch.int32, "BF16": torch.bfloat16,
    "F16": torch.float16, "U16": torch.uint16, "I16": torch.int16, "F8_E5M2FNUZ": torch.float8_e5m2fnuz,
    "F8_E4M3FNUZ": torch.float8_e4m3fnuz, "F8_E8M0": torch.float8_e8m0fnu, "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2, "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool}
SAFETENSORS_CODES = {dtype: code for code, dtype in SAFETENSORS_DTYPES.items()}


def float_dtype(name, what="dtype"):
    """The torch dtype of a FLOAT_DTYPES name; ValueError naming `what` and the choices otherwise."""
    if name not in FLOAT_DTYPES:
        raise ValueError(f"unknown {what} {name!r}; use one of {', '.join(FLOAT_DTYPES)}")
    return FLOAT_DTYPES[name]
