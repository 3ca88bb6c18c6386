"""Open Inference Protocol datatypes and the binary tensor encoding, shared by HTTP and gRPC.

The protocol names element types ``BOOL``, ``UINT8`` … ``FP64`` and ``BYTES``.
Fixed-size types travel as little-endian row-major bytes; ``BYTES`` elements
each as a 4-byte little-endian length followed by that many bytes (Triton's
binary tensor extension and gRPC ``raw_*_contents`` use the same layout).
"""

from __future__ import annotations

import struct

import numpy as np

from fogline.errors import SignatureMismatch

#: OIP datatype → numpy dtype (BYTES are numpy objects holding ``bytes``).
TO_NUMPY: dict[str, np.dtype] = {
    "BOOL": np.dtype(bool),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "BYTES": np.dtype(object),
}
#: fogline / ONNX dtype name → OIP datatype.
FROM_NAME = {
    "bool": "BOOL",
    "uint8": "UINT8",
    "uint16": "UINT16",
    "uint32": "UINT32",
    "uint64": "UINT64",
    "int8": "INT8",
    "int16": "INT16",
    "int32": "INT32",
    "int64": "INT64",
    "float16": "FP16",
    "float32": "FP32",
    "float64": "FP64",
    "str": "BYTES",
}


#: OIP datatype → fogline / ONNX dtype name.
TO_NAME = {datatype: name for name, datatype in FROM_NAME.items()}


def dtype_name(datatype: str) -> str:
    """The fogline dtype name of an OIP datatype (``"FP32"`` → ``"float32"``).

    >>> dtype_name("FP32"), dtype_name("BYTES")
    ('float32', 'str')
    """
    try:
        return TO_NAME[datatype]
    except KeyError:
        raise SignatureMismatch(
            f"unknown datatype {datatype!r}; the protocol has {', '.join(TO_NUMPY)}"
        ) from None


def datatype_of(dtype: str) -> str:
    """The OIP datatype of a fogline dtype name (``"float32"`` → ``"FP32"``).

    >>> datatype_of("float32"), datatype_of("str")
    ('FP32', 'BYTES')
    """
    try:
        return FROM_NAME[dtype]
    except KeyError:
        raise SignatureMismatch(
            f"dtype {dtype!r} has no Open Inference Protocol datatype"
        ) from None


def numpy_dtype(datatype: str) -> np.dtype:
    """The numpy dtype of an OIP datatype; :class:`SignatureMismatch` for an unknown one."""
    try:
        return TO_NUMPY[datatype]
    except KeyError:
        known = ", ".join(TO_NUMPY)
        raise SignatureMismatch(
            f"unknown datatype {datatype!r}; the protocol has {known}"
        ) from None


def element_count(shape: list[int] | tuple[int, ...]) -> int:
    count = 1
    for dim in shape:
        count *= int(dim)
    return count


#: Shapes past these are refused before any memory is touched.
MAX_RANK = 32
MAX_EXTENT = 1 << 40


def check_shape(shape: list[int], name: str) -> int:
    """The element count of ``shape``; :class:`SignatureMismatch` for a shape numpy cannot hold.

    >>> check_shape([2, 3], "x")
    6
    >>> check_shape([0, 2**40, 2**40], "x")
    Traceback (most recent call last):
    ...
    fogline.errors.SignatureMismatch: input 'x': shape [0, 1099511627776, 1099511627776] is too large
    """
    if len(shape) > MAX_RANK:
        raise SignatureMismatch(f"input {name!r}: {len(shape)} dimensions; at most {MAX_RANK}")
    if any(int(d) < 0 for d in shape):
        raise SignatureMismatch(f"input {name!r}: negative dimension in shape {list(shape)}")
    extent = 1
    for dim in shape:
        extent *= max(int(dim), 1)  # numpy refuses a huge shape even when a zero empties it
    if extent > MAX_EXTENT:
        raise SignatureMismatch(f"input {name!r}: shape {list(shape)} is too large")
    return element_count(shape)


def decode(raw: bytes | memoryview, datatype: str, shape: list[int], name: str) -> np.ndarray:
    """Bytes of one tensor → an array of ``shape``; :class:`SignatureMismatch` if they disagree.

    >>> decode(np.arange(3, dtype="<f4").tobytes(), "FP32", [1, 3], "x")
    array([[0., 1., 2.]], dtype=float32)
    >>> decode(b"\\x02\\x00\\x00\\x00hi", "BYTES", [1], "s")
    array([b'hi'], dtype=object)
    >>> decode(b"\\x00" * 5, "FP32", [2], "x")
    Traceback (most recent call last):
    ...
    fogline.errors.SignatureMismatch: input 'x': 5 bytes of data, but shape [2] of FP32 needs 8
    """
    dtype = numpy_dtype(datatype)
    count = check_shape(shape, name)
    if datatype == "BYTES":
        if count * 4 > len(raw):  # each element needs at least its 4-byte length
            raise SignatureMismatch(
                f"input {name!r}: {len(raw)} bytes cannot hold {count} BYTES elements"
            )
        return _decode_bytes(bytes(raw), count, name).reshape(shape)
    need = count * dtype.itemsize
    if len(raw) != need:
        raise SignatureMismatch(
            f"input {name!r}: {len(raw)} bytes of data, but shape {list(shape)} of {datatype} "
            f"needs {need}"
        )
    return np.frombuffer(raw, dtype=dtype).reshape(shape)


def _decode_bytes(raw: bytes, count: int, name: str) -> np.ndarray:
    out = np.empty(count, dtype=object)
    offset = 0
    for index in range(count):
        if offset + 4 > len(raw):
            raise SignatureMismatch(
                f"input {name!r}: BYTES data ends after {index} of {count} elements"
            )
        (size,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + size > len(raw):
            raise SignatureMismatch(
                f"input {name!r}: BYTES element {index} claims {size} bytes; only "
                f"{len(raw) - offset} are left"
            )
        out[index] = raw[offset : offset + size]
        offset += size
    if offset != len(raw):
        raise SignatureMismatch(
            f"input {name!r}: {len(raw) - offset} bytes left over after {count} BYTES elements"
        )
    return out


def encode(array: np.ndarray, datatype: str) -> bytes:
    """An array → its protocol bytes (BYTES elements length-prefixed).

    >>> encode(np.array([b"hi", "yo"], dtype=object), "BYTES")
    b'\\x02\\x00\\x00\\x00hi\\x02\\x00\\x00\\x00yo'
    """
    if datatype == "BYTES":
        parts = []
        for element in np.asarray(array, dtype=object).reshape(-1):
            data = element.encode() if isinstance(element, str) else bytes(element)
            parts.append(struct.pack("<I", len(data)))
            parts.append(data)
        return b"".join(parts)
    return np.ascontiguousarray(array, dtype=numpy_dtype(datatype)).tobytes()


def datatype_of_output(array: np.ndarray, name: str) -> str:
    """The OIP datatype of an output array; :class:`SignatureMismatch` if it has none.

    >>> datatype_of_output(np.zeros(2, np.float32), "y"), datatype_of_output(np.array(["a"]), "s")
    ('FP32', 'BYTES')
    """
    if array.dtype.kind in "OSU":
        return "BYTES"
    try:
        return FROM_NAME[array.dtype.name]
    except KeyError:
        raise SignatureMismatch(
            f"output {name!r} has numpy dtype {array.dtype.name}, which the protocol cannot carry"
        ) from None
