"""Safe access to HDF5 files from untrusted sources (run files, NIR files).

A hostile file can make a naive reader open other files (external links, external
storage, virtual datasets), read elsewhere in the file (soft links), loop (hard-link
cycles), allocate without bound (a declared shape far larger than the data stored, huge
chunks) or blow the interpreter's stack (deeply nested JSON). Everything here refuses
those with an exception built by the caller's ``error`` class, one line naming the file
(``source``) and the object.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import h5py
import numpy as np

from bioplaus.resources import size_text

# Largest chunk accepted: HDF5 inflates whole chunks, and a writer's chunk is one row.
MAX_CHUNK_BYTES = 1 << 30
# Deepest group nesting and JSON nesting accepted; bioplaus writes a handful of levels.
MAX_DEPTH = 64
# Most objects walked in one file: a run file holds hundreds.
MAX_OBJECTS = 100_000
# Deflate cannot compress better than about 1032:1; a declared size beyond that ratio of
# the bytes stored is a sparse (never written) dataset, which reads as fill values.
_DEFLATE_MAX_RATIO = 1100
# Declared sizes up to this are read without comparing them to the storage.
_SMALL_BYTES = 1 << 20


def brief(value: Any, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters for a message."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def clean_text(text: str) -> str:
    """``text`` with lone surrogates (h5py's stand-ins for bytes that are not UTF-8)
    replaced by U+FFFD, so that printing it cannot fail."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return text


def as_text(value: Any) -> str | None:
    """A str/bytes attribute or scalar as text (bytes that are not UTF-8 become U+FFFD);
    None for anything else."""
    if isinstance(value, np.ndarray) and value.shape == () and value.dtype.kind in "SUO":
        value = value[()]
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, str):
        return clean_text(value)
    return None


def json_depth_ok(obj: Any, limit: int = MAX_DEPTH) -> bool:
    """True if ``obj`` nests dicts/lists at most ``limit`` deep (checked without recursion)."""
    stack = [(obj, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return False
        stack.extend((child, depth + 1) for child in children)
    return True


def load_json(text: str, where: str, error: type[Exception], *, strict: bool) -> Any:
    """Decode JSON text with a nesting limit; ``strict=False`` returns malformed text as is.

    Python's json module recurses per nesting level (RecursionError near 1000 levels) and
    refuses integers of more than 4300 digits with a plain ValueError: both become one line.
    """
    try:
        obj = json.loads(text)
    except RecursionError:
        raise error(f"{where}: JSON nested too deeply (limit {MAX_DEPTH} levels)") from None
    except json.JSONDecodeError as exc:
        if not strict:
            return text
        raise error(f"{where}: not valid JSON ({exc})") from None
    except ValueError as exc:  # e.g. integer string conversion limit
        raise error(f"{where}: JSON not accepted ({exc})") from None
    if not json_depth_ok(obj):
        raise error(f"{where}: JSON nested deeper than {MAX_DEPTH} levels")
    try:
        json.dumps(obj, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        # \udXXX escapes without their pair: keep the text printable.
        fixed = json.dumps(obj, ensure_ascii=False).encode("utf-8", "replace")
        obj = json.loads(fixed)
    return obj


def decode_attr(value: Any, where: str, error: type[Exception]) -> Any:
    """HDF5 attribute -> Python value; JSON text (objects, arrays, null) is decoded.

    Text that is not UTF-8 is decoded with replacement characters (harmless for meta
    items; callers check fields whose values matter, such as the status).
    """
    text = as_text(value) if isinstance(value, bytes | str) else None
    if text is not None:
        if text.startswith(("{", "[")) or text == "null":
            return load_json(text, where, error, strict=False)
        return text
    if isinstance(value, np.generic):
        return value.item()
    return value


def read_attr(obj: Any, key: str, where: str, error: type[Exception], default: Any = None) -> Any:
    """One raw attribute of ``obj`` (``default`` if absent); unreadable ones raise ``error``."""
    try:
        if key not in obj.attrs:
            return default
        return obj.attrs[key]
    except (OSError, RuntimeError, TypeError, ValueError, UnicodeDecodeError) as exc:
        raise error(f"{where}: attribute {key!r} cannot be read ({exc})") from None


def read_attrs(obj: Any, where: str, error: type[Exception]) -> dict[str, Any]:
    """Every attribute of ``obj``, decoded; names must be UTF-8."""
    try:
        names = list(obj.attrs.keys())
    except (OSError, RuntimeError, UnicodeDecodeError) as exc:
        raise error(f"{where}: attributes cannot be read ({exc})") from None
    out: dict[str, Any] = {}
    for key in names:
        if not isinstance(key, str) or clean_text(key) != key:
            raise error(f"{where}: an attribute name is not valid UTF-8 ({brief(key)})")
        out[key] = decode_attr(read_attr(obj, key, where, error), f"{where}: attribute {key!r}", error)
    return out


def _link_problem(link: Any) -> str | None:
    if isinstance(link, h5py.HardLink):
        return None
    if isinstance(link, h5py.ExternalLink):
        return f"external link to {link.filename}:{link.path} refused (it would open another file)"
    if isinstance(link, h5py.SoftLink):
        return f"soft link to {link.path} refused (run and NIR files hold no links)"
    return "link of an unknown kind refused"


def get(root: h5py.Group, path: str, source: str, error: type[Exception]) -> Any:
    """The object at ``path`` reached through hard links only; None if absent.

    Unlike ``Group.get``, never follows an external or soft link, at any level.
    """
    obj: Any = root
    parts = [p for p in path.strip("/").split("/") if p]
    for i, part in enumerate(parts):
        if not isinstance(obj, h5py.Group):
            return None
        where = "/" + "/".join(parts[: i + 1])
        try:
            link = obj.get(part, getlink=True)
            if link is None:
                return None
            problem = _link_problem(link)
            if problem is None:
                obj = obj[part]
        except (OSError, RuntimeError, KeyError, ValueError) as exc:
            raise error(f"{source}: {where}: cannot be opened ({exc})") from None
        if problem is not None:
            raise error(f"{source}: {where}: {problem}")
    return obj


def walk(
    group: h5py.Group, source: str, error: type[Exception], prefix: str = ""
) -> Iterator[tuple[str, h5py.Group | h5py.Dataset]]:
    """(path relative to ``group``, object) for everything below it, names sorted.

    Follows hard links only and refuses any other link, a group reached twice (hard-link
    cycles), names that are not UTF-8, nesting deeper than MAX_DEPTH and more than
    MAX_OBJECTS objects. Iterative: deep files cannot exhaust the stack.
    """
    seen = {hash(group.id)}
    stack: list[tuple[h5py.Group, str, int]] = [(group, "", 0)]
    count = 0
    base = "/" + prefix.strip("/") if prefix.strip("/") else ""
    while stack:
        grp, rel, depth = stack.pop()
        try:
            names = list(grp.keys())
        except (OSError, RuntimeError, UnicodeDecodeError) as exc:
            raise error(f"{source}: {base}/{rel}: group cannot be listed ({exc})") from None
        # h5py hands out names that are not UTF-8 as bytes: they sort last, and fail below.
        names.sort(key=lambda n: (not isinstance(n, str), n if isinstance(n, str) else ""))
        children: list[tuple[str, Any]] = []
        for name in names:
            if not isinstance(name, str) or clean_text(name) != name:
                shown = name.decode("utf-8", "replace") if isinstance(name, bytes) else clean_text(name)
                raise error(f"{source}: {base}/{rel + '/' if rel else ''}{shown}: object name is not valid UTF-8")
            path = f"{rel}/{name}" if rel else name
            where = f"{base}/{path}"
            count += 1
            if count > MAX_OBJECTS:
                raise error(f"{source}: more than {MAX_OBJECTS} objects; refused")
            try:
                link = grp.get(name, getlink=True)
                problem = _link_problem(link)
                obj = grp[name] if problem is None else None
            except (OSError, RuntimeError, KeyError, ValueError) as exc:
                raise error(f"{source}: {where}: cannot be opened ({exc})") from None
            if problem is not None:
                raise error(f"{source}: {where}: {problem}")
            if isinstance(obj, h5py.Group):
                if depth + 1 >= MAX_DEPTH:
                    raise error(f"{source}: {where}: groups nested deeper than {MAX_DEPTH} levels")
                key = hash(obj.id)
                if key in seen:
                    raise error(f"{source}: {where}: group reached twice (hard-link cycle); refused")
                seen.add(key)
                children.append((path, obj))
            elif not isinstance(obj, h5py.Dataset):
                raise error(f"{source}: {where}: unsupported object type {type(obj).__name__}")
            yield path, obj
        # Depth first in name order: push the children reversed.
        stack.extend((obj, path, depth + 1) for path, obj in reversed(children))


def declared_bytes(ds: h5py.Dataset) -> int:
    """Bytes the full dataset would take in memory (Python ints: no overflow)."""
    n = int(ds.dtype.itemsize)
    for d in ds.shape or ():
        n *= int(d)
    return n


def check_dataset(ds: h5py.Dataset, where: str, source: str, error: type[Exception]) -> None:
    """Refuse external storage, virtual datasets, null dataspaces, chunks over
    MAX_CHUNK_BYTES and declared sizes that the stored bytes cannot back (sparse datasets)."""
    try:
        external = ds.external
        virtual = ds.is_virtual
        shape = ds.shape
        chunks = ds.chunks
        plist = ds.id.get_create_plist()
        n_filters = plist.get_nfilters() if chunks else 0
        stored = int(ds.id.get_storage_size())
    except (OSError, RuntimeError, TypeError, ValueError) as exc:
        raise error(f"{source}: {where}: dataset cannot be inspected ({exc})") from None
    if external:
        files = ", ".join(sorted({str(e[0]) for e in external}))
        raise error(f"{source}: {where}: external storage in {files} refused (it reads another file)")
    if virtual:
        raise error(f"{source}: {where}: virtual dataset refused (it reads other datasets or files)")
    if shape is None:
        raise error(f"{source}: {where}: dataset without a dataspace (H5S_NULL)")
    nbytes = declared_bytes(ds)
    if chunks:
        chunk_bytes = int(ds.dtype.itemsize)
        for c in chunks:
            chunk_bytes *= int(c)
        if chunk_bytes > MAX_CHUNK_BYTES:
            raise error(
                f"{source}: {where}: chunks of {size_text(chunk_bytes)} refused "
                f"(more than {size_text(MAX_CHUNK_BYTES)})"
            )
    ratio = _DEFLATE_MAX_RATIO if n_filters else 1
    if nbytes > stored * ratio + _SMALL_BYTES:
        raise error(
            f"{source}: {where}: declares shape {shape} {ds.dtype.str} "
            f"({size_text(nbytes)}) but stores only {size_text(stored)}; refused"
        )


def read(
    ds: h5py.Dataset, where: str, source: str, error: type[Exception], *,
    rows: int | None = None, cap: int | None = None,
) -> Any:
    """``ds[()]`` (or its first ``rows`` rows) after `check_dataset`, refusing to load more
    than ``cap`` bytes; HDF5 read errors (bad filters, corrupt chunks) raise ``error``."""
    check_dataset(ds, where, source, error)
    nbytes = declared_bytes(ds)
    if rows is not None and ds.shape:
        nbytes = nbytes // max(1, int(ds.shape[0])) * rows
    if cap is not None and nbytes > cap:
        raise error(
            f"{source}: {where}: would load {size_text(nbytes)} at once, more than the "
            f"{size_text(cap)} cap (bioplaus.record.reader.MAX_READ_BYTES)"
        )
    try:
        return ds[()] if rows is None else ds[:rows]
    except (OSError, RuntimeError, TypeError, ValueError, UnicodeDecodeError, MemoryError) as exc:
        raise error(f"{source}: {where}: cannot be read ({exc})") from None


def check_tree(
    root: h5py.Group, source: str, error: type[Exception], *, read_cap: int | None = None
) -> int:
    """Walk the whole file: links, datasets (`check_dataset`) and every attribute.

    Returns the declared bytes of all datasets; above ``read_cap`` raises ``error``
    (for readers, such as ``nir.read``, that load every dataset).
    """
    total = 0
    read_attrs(root, f"{source}: /", error)
    for path, obj in walk(root, source, error):
        where = "/" + path
        if isinstance(obj, h5py.Dataset):
            check_dataset(obj, where, source, error)
            total += declared_bytes(obj)
        read_attrs(obj, f"{source}: {where}", error)
    if read_cap is not None and total > read_cap:
        raise error(
            f"{source}: datasets of {size_text(total)} in all refused (at most "
            f"{size_text(read_cap)})"
        )
    return total

