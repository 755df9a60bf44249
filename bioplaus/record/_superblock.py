"""The HDF5 superblock of a run file, read as bytes: status flags, stored end of file, and a
read-only view of the file with the status flags cleared.

HDF5 (superblock version 2 and 3, the versions of files written with ``libver`` v110 or
later) keeps in the superblock whether the file is open for writing (bit 0) and whether in
SWMR mode (bit 2). A writer that dies without closing leaves the bits set. With bit 0 alone
(written outside SWMR), HDF5 refuses every open ("file is already open for write"); the
documented recovery, ``h5clear -s``, rewrites the user's file. `ClearedFlags` instead gives
HDF5 a view of the file in which the flags read 0 (and the superblock checksum matches),
so the file opens read-only, unchanged. The stored end of file lets a reader find a
truncated file before HDF5 does: an SWMR-read open skips that check and retries forever.

Layout (HDF5 file format specification, "Superblock Version 2 and 3"): signature (8 bytes),
version (1), size of offsets O (1), size of lengths (1), file consistency flags (1), base
address (O), superblock extension address (O), end of file address (O), root group object
header address (O), checksum (4, Jenkins lookup3 over all bytes before it).
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path

SIGNATURE = b"\x89HDF\r\n\x1a\n"
# Where HDF5 looks for the superblock: 0, then 512, 1024, 2048, ... (after a user block).
OFFSETS = (0, *(512 << k for k in range(12)))
WRITE_ACCESS = 0x01
SWMR_WRITE_ACCESS = 0x04
_M = 0xFFFFFFFF


@dataclass(frozen=True)
class Superblock:
    """What a version 2/3 superblock says: where it is, its flags, base address and stored
    end of file (absolute: base + end of file address), and its bytes."""

    offset: int
    flags: int
    eof: int
    raw: bytes

    @property
    def open_outside_swmr(self) -> bool:
        """A writer opened the file outside SWMR mode and did not close it."""
        return bool(self.flags & WRITE_ACCESS) and not self.flags & SWMR_WRITE_ACCESS

    def cleared(self) -> bytes:
        """The superblock's bytes with the flags 0 and the checksum recomputed."""
        body = bytearray(self.raw[:-4])
        body[11] = 0
        return bytes(body) + lookup3(bytes(body)).to_bytes(4, "little")


def read_superblock(path: Path) -> Superblock | None:
    """The version 2/3 superblock of ``path``; None if there is none, it is another version,
    or its checksum does not match (then HDF5 itself reports the problem)."""
    try:
        with open(path, "rb") as fh:
            for off in OFFSETS:
                fh.seek(off)
                head = fh.read(12)
                if len(head) < 12:
                    return None
                if head[:8] != SIGNATURE:
                    continue
                if head[8] not in (2, 3) or head[9] not in (2, 4, 8):
                    return None
                size = 12 + 4 * head[9] + 4
                fh.seek(off)
                raw = fh.read(size)
                break
            else:
                return None
    except OSError:
        return None
    if len(raw) < size or lookup3(raw[:-4]) != int.from_bytes(raw[-4:], "little"):
        return None
    o = head[9]
    base = int.from_bytes(raw[12 : 12 + o], "little")
    eof = int.from_bytes(raw[12 + 2 * o : 12 + 3 * o], "little")
    return Superblock(offset=off, flags=head[11], eof=base + eof, raw=raw)


def lookup3(data: bytes, initval: int = 0) -> int:
    """Bob Jenkins' lookup3 ``hashlittle``, the checksum of HDF5 metadata (H5_checksum_lookup3)."""

    def rot(x: int, k: int) -> int:
        return ((x << k) | (x >> (32 - k))) & _M

    n = len(data)
    a = b = c = (0xDEADBEEF + n + initval) & _M
    i = 0
    while n > 12:
        a = (a + int.from_bytes(data[i : i + 4], "little")) & _M
        b = (b + int.from_bytes(data[i + 4 : i + 8], "little")) & _M
        c = (c + int.from_bytes(data[i + 8 : i + 12], "little")) & _M
        a = (a - c) & _M; a ^= rot(c, 4); c = (c + b) & _M  # noqa: E702
        b = (b - a) & _M; b ^= rot(a, 6); a = (a + c) & _M  # noqa: E702
        c = (c - b) & _M; c ^= rot(b, 8); b = (b + a) & _M  # noqa: E702
        a = (a - c) & _M; a ^= rot(c, 16); c = (c + b) & _M  # noqa: E702
        b = (b - a) & _M; b ^= rot(a, 19); a = (a + c) & _M  # noqa: E702
        c = (c - b) & _M; c ^= rot(b, 4); b = (b + a) & _M  # noqa: E702
        n -= 12
        i += 12
    if n == 0:
        return c
    tail = data[i : i + n] + bytes(12 - n)  # the reference's byte-wise fall-through, as zeros
    a = (a + int.from_bytes(tail[0:4], "little")) & _M
    b = (b + int.from_bytes(tail[4:8], "little")) & _M
    c = (c + int.from_bytes(tail[8:12], "little")) & _M
    c ^= b; c = (c - rot(b, 14)) & _M  # noqa: E702
    a ^= c; a = (a - rot(c, 11)) & _M  # noqa: E702
    b ^= a; b = (b - rot(a, 25)) & _M  # noqa: E702
    c ^= b; c = (c - rot(b, 16)) & _M  # noqa: E702
    a ^= c; a = (a - rot(c, 4)) & _M  # noqa: E702
    b ^= a; b = (b - rot(a, 14)) & _M  # noqa: E702
    c ^= b; c = (c - rot(b, 24)) & _M  # noqa: E702
    return c


class ClearedFlags(io.RawIOBase):
    """``path`` read-only, its superblock's status flags read as 0 (for ``h5py.File(obj, "r")``)."""

    def __init__(self, path: Path, sb: Superblock) -> None:
        super().__init__()
        self._fh = open(path, "rb")  # noqa: SIM115 - closed in close()
        self._lo = sb.offset
        self._patch = sb.cleared()
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, pos: int, whence: int = os.SEEK_SET) -> int:
        self._pos = self._fh.seek(pos, whence)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def readinto(self, buf: bytearray | memoryview) -> int:  # type: ignore[override]
        self._fh.seek(self._pos)
        n = self._fh.readinto(buf) or 0
        lo, hi = max(self._pos, self._lo), min(self._pos + n, self._lo + len(self._patch))
        if lo < hi:
            memoryview(buf)[lo - self._pos : hi - self._pos] = self._patch[lo - self._lo : hi - self._lo]
        self._pos += n
        return n

    def close(self) -> None:
        self._fh.close()
        super().close()


GCOL = b"GCOL"
_U64 = (1 << 64) - 1
# Collections larger than this are not walked (HDF5 writes them of 4 KiB or the size of one
# large object).
_MAX_COLLECTION = 1 << 28


def looping_global_heap(path: Path, size_of_lengths: int = 8) -> int | None:
    """The offset of a global heap collection whose objects HDF5 would parse forever; None
    if there is none.

    Variable-length strings (the run file's JSON attributes) live in global heap collections:
    "GCOL", version 1, 3 reserved bytes, the collection size C (L bytes), then objects, each
    index (2 bytes), reference count (2), reserved (4), size s (L), data padded to 8 bytes.
    HDF5 (1.14) walks the objects with p <- p + need, need = 16 + align8(s) for an object and
    need = s for the free space (index 0), and never checks need > 0: a free-space size of 0
    (one flipped bit) spins in ``H5HG__cache_heap_deserialize`` inside a single C call, deaf
    to signals. This walks every collection the same way first, without HDF5."""
    L = size_of_lengths
    hdr = (8 + L + 7) & ~7
    objhdr = (8 + L + 7) & ~7
    chunk = 1 << 24
    try:
        with open(path, "rb") as fh:  # plain reads: an mmap of a sparse file on a full tmpfs is a SIGBUS
            n = os.fstat(fh.fileno()).st_size
            pos = 0
            while pos < n:
                fh.seek(pos)
                block = fh.read(chunk + len(GCOL) - 1)
                if not block:
                    break
                hit = block.find(GCOL)
                while hit != -1 and hit < chunk:
                    off = pos + hit
                    fh.seek(off)
                    head = fh.read(hdr)
                    if len(head) == hdr and head[4] == 1:
                        size_c = min(int.from_bytes(head[8 : 8 + L], "little"), n - off, _MAX_COLLECTION)
                        fh.seek(off)
                        col = fh.read(size_c)
                        p, end = hdr, len(col)
                        while p + objhdr <= end:
                            idx = int.from_bytes(col[p : p + 2], "little")
                            size = int.from_bytes(col[p + 8 : p + 8 + L], "little")
                            need = (objhdr + ((size + 7) & ~7)) & _U64 if idx > 0 else size
                            if need == 0 or need >= 1 << 63:  # no progress, or a pointer wrap
                                return off
                            p += need
                    hit = block.find(GCOL, hit + 1)
                pos += chunk
    except (OSError, ValueError):
        return None
    return None
