"""Read and write IDX files, the big-endian array format of MNIST and Fashion-MNIST.

Layout: a 4-byte magic number ``0x00 0x00 <dtype code> <ndim>``, then ``ndim`` big-endian
uint32 sizes, then the ``prod(sizes)`` items, big-endian, in C order.
Files may be gzip-compressed; the reader detects this from the gzip magic bytes, the writer
from a ``.gz`` suffix.
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np

__all__ = ["read_idx", "write_idx", "IDX_DTYPES"]

#: IDX dtype code -> big-endian numpy dtype.
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CODES: dict[tuple[str, int], int] = {
    (dt.kind, dt.itemsize): code for code, dt in IDX_DTYPES.items()
}
_GZIP_MAGIC = b"\x1f\x8b"


def _open(path: Path) -> BinaryIO:
    with open(path, "rb") as f:
        head = f.read(2)
    if head == _GZIP_MAGIC:
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return open(path, "rb")


def _read_exact(f: BinaryIO, n: int) -> bytes:
    data = f.read(n)
    return data if data is not None else b""


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX file (raw or gzip) into a native-endian numpy array of its stored shape.

    Raises ``ValueError`` naming the file when the magic number is wrong, the dtype code is
    unknown, or the file is shorter or longer than its header says.
    """
    path = Path(path)
    try:
        with _open(path) as f:
            magic = _read_exact(f, 4)
            if len(magic) < 4 or magic[0] != 0 or magic[1] != 0:
                raise ValueError(
                    f"{path}: not an IDX file (bad magic number {magic.hex() or 'empty'}; "
                    "expected 0000<dtype><ndim>)"
                )
            code, ndim = magic[2], magic[3]
            if code not in IDX_DTYPES:
                raise ValueError(f"{path}: unknown IDX dtype code 0x{code:02x}")
            raw_dims = _read_exact(f, 4 * ndim)
            if len(raw_dims) < 4 * ndim:
                raise ValueError(f"{path}: truncated IDX file (header cut short)")
            dims = struct.unpack(f">{ndim}I", raw_dims)
            dtype = IDX_DTYPES[code]
            count = int(np.prod(dims, dtype=np.int64))
            # Read straight into the array's buffer: one allocation, and the result is
            # writable (np.frombuffer on bytes would be read-only).
            out = np.empty(count, dtype=dtype)
            buf = memoryview(out).cast("B")
            got = 0
            while got < buf.nbytes:
                n = f.readinto(buf[got:])  # type: ignore[attr-defined]
                if not n:
                    break
                got += n
            if got < buf.nbytes:
                raise ValueError(
                    f"{path}: truncated IDX file ({got} of {buf.nbytes} data bytes for shape "
                    f"{tuple(dims)})"
                )
            if _read_exact(f, 1):
                raise ValueError(f"{path}: IDX file is longer than its header {tuple(dims)} says")
    except (EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise ValueError(f"{path}: corrupt or truncated gzip stream ({e})") from e
    out = out.reshape(dims)
    if dtype.itemsize > 1:
        out = out.astype(dtype.newbyteorder("="))
    return out


def write_idx(path: str | os.PathLike[str], array: np.ndarray) -> Path:
    """Write ``array`` as an IDX file; gzip-compressed when ``path`` ends in ``.gz``."""
    path = Path(path)
    a = np.asarray(array)
    code = _CODES.get((a.dtype.kind, a.dtype.itemsize))
    if code is None:
        raise ValueError(
            f"{path}: IDX cannot store dtype {a.dtype}; use uint8, int8, int16, int32, "
            "float32 or float64"
        )
    if a.ndim > 255:
        raise ValueError(f"{path}: IDX stores at most 255 dimensions, got {a.ndim}")
    header = bytes([0, 0, code, a.ndim]) + struct.pack(f">{a.ndim}I", *a.shape)
    payload = np.ascontiguousarray(a, dtype=IDX_DTYPES[code]).tobytes()
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wb") as f:
        f.write(header)
        f.write(payload)
    return path
