"""This machine's memory and CPUs, and the one check of a size against them before allocation.

Every "this would need X bytes, the machine has Y" refusal goes through `check_bytes`, and
every "N worker processes" through `check_workers`, so that the messages say the same
thing in the same words (the field, the size it would need, what the machine has).
"""

from __future__ import annotations

import os

from bioplaus.errors import ConfigError

MAX_WORKERS_PER_CPU = 4  # more processes than this per CPU only queue for the same cores


def physical_memory() -> int:
    """Bytes of RAM of this machine (0 if unknown)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 0


def cpu_count() -> int:
    """CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def size_text(n: float) -> str:
    """Bytes as a short human size (``1.5 GiB``, ``7.3 TiB``)."""
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"  # pragma: no cover - the loop returns


def check_bytes(need: float, where: str, what: str, share: float = 1.0) -> None:
    """Refuse ``what`` (at ``where``, the field) if it would need more than ``share`` of this
    machine's memory; the message says both sizes."""
    ram = physical_memory()
    if ram and need > share * ram:
        part = "" if share == 1.0 else ("half of " if share == 0.5 else f"{share:g} of ")
        raise ConfigError(f"{where}: {what} would need about {size_text(need)}, "
                          f"more than {part}this machine's memory ({size_text(ram)})")


def check_workers(workers: int, where: str, per_worker: float) -> None:
    """Refuse ``workers`` processes of about ``per_worker`` bytes each that this machine's
    memory cannot hold, or more than MAX_WORKERS_PER_CPU per CPU."""
    cpus = cpu_count()
    if workers > MAX_WORKERS_PER_CPU * cpus:
        raise ConfigError(f"{where}: {workers} worker processes on {cpus} CPUs "
                          f"(at most {MAX_WORKERS_PER_CPU} per CPU, {MAX_WORKERS_PER_CPU * cpus})")
    check_bytes(workers * per_worker, where, f"{workers} worker processes of ~{size_text(per_worker)} each")
