"""User-facing errors: each carries one line that the CLI prints before exiting with code 2."""

from __future__ import annotations

import difflib
import errno
import os
import re
from collections.abc import Iterable


class BioplausError(Exception):
    """Base of every error whose message is meant for the user, not a traceback.

    The message is made one printable line (`one_line`): it may quote untrusted input.
    """

    def __init__(self, *args: object) -> None:
        if args and isinstance(args[0], str):
            args = (one_line(args[0]), *args[1:])
        super().__init__(*args)


class ConfigError(BioplausError):
    """A configuration value is missing, unknown or of the wrong type; the message names it."""


class DataError(BioplausError):
    """A data set is missing or malformed; the message names the data set or file."""


class RunError(BioplausError):
    """A run could not go on (NaN loss, diverging weights); the message names the step."""


class OutputError(BioplausError):
    """The run file cannot be written where asked: it exists and overwriting was not asked,
    the path is a directory or not a run file, or the OS refused (permission, read-only file
    system, disk full). The message names the file and the reason."""

    def __init__(self, message: str) -> None:
        super().__init__(one_line(message))


class RunInterrupted(KeyboardInterrupt):
    """A run stopped by Ctrl-C or SIGTERM. ``path`` is the run file, closed with status
    "interrupted", or None when the signal came before the file was created."""

    def __init__(self, path: object = None) -> None:
        super().__init__("interrupted")
        self.path = path


def one_line(text: str) -> str:
    """``text`` as one printable line: line breaks and other control characters escaped.

    Messages naming objects of untrusted files must not break the one-line contract, nor
    carry lone surrogates (undecodable bytes) that a strict stdout cannot encode.
    """
    text = str(text).encode("utf-8", "replace").decode("utf-8")
    return _CONTROL.sub(lambda m: repr(m.group())[1:-1], text)


class RunFileError(BioplausError, ValueError):
    """A run file is unreadable, malformed or refused as unsafe; the message names the file
    and the offending object. Also a ValueError, which the reader raised before."""

    def __init__(self, message: str) -> None:
        super().__init__(one_line(message))


class RunFileNotFound(RunFileError, FileNotFoundError):
    """No run file at the path given; also the FileNotFoundError the reader raised before."""


class NIRFileError(BioplausError, ValueError):
    """A NIR file or graph is unreadable, malformed or cannot be rebuilt as a bioplaus net;
    the message names the file (or graph) and the offending node, edge or field."""

    def __init__(self, message: str) -> None:
        super().__init__(one_line(message))


_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def os_reason(exc: BaseException) -> str:
    """The OS error behind an exception (h5py puts it in the message), as a short phrase."""
    cur: BaseException | None = exc
    while cur is not None:
        code = getattr(cur, "errno", None)
        if not isinstance(code, int) or not code:
            m = re.search(r"errno = (\d+)", str(cur))
            code = int(m.group(1)) if m else None
        if code:
            text = os.strerror(code)
            if code == errno.ENOSPC:
                return f"disk full ({text})"
            if code == errno.EDQUOT:
                return f"disk quota exceeded ({text})"
            return text
        cur = cur.__cause__ or cur.__context__
    lines = str(exc).strip().splitlines()
    return (lines[0] if lines else type(exc).__name__)[:300]


def close_names(name: object, valid: Iterable[str], n: int = 1, cutoff: float = 0.6) -> list[str]:
    """The names of ``valid`` closest to ``name`` (difflib's ratio >= ``cutoff``), best first."""
    return difflib.get_close_matches(str(name), [str(v) for v in valid], n=n, cutoff=cutoff)


def did_you_mean(name: object, valid: Iterable[str]) -> str:
    """`` (did you mean 'lr'?)`` for the closest valid name (`close_names`), or "" if none is close.

    The one phrasing of a suggestion for a mistyped key or name (config keys, rules, plugins,
    kinds, neuron models, data sets); appended to the message that lists the valid ones.
    """
    close = close_names(name, valid)
    return f" (did you mean {close[0]!r}?)" if close else ""
