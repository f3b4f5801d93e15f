"""Small formatters for figures shown to people (chat replies, the status page)."""

from __future__ import annotations


def duration(seconds: float) -> str:
    """``3d 4h 5m``, ``4h 5m``, ``5m 6s``."""
    seconds = int(max(seconds, 0))
    days, rem = divmod(seconds, 86400)
    hours, rem = divmod(rem, 3600)
    minutes, secs = divmod(rem, 60)
    if days:
        return f"{days}d {hours}h {minutes}m"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m {secs}s"


def seconds(value: float | None) -> str:
    if value is None:
        return "–"
    if value < 1:
        return f"{value * 1000:.0f} ms"
    return f"{value:.2f} s"


def size(value: float | None) -> str:
    """Bytes as MiB or GiB."""
    if value is None:
        return "–"
    if abs(value) >= 2**30:
        return f"{value / 2**30:.2f} GiB"
    return f"{value / 2**20:.1f} MiB"


def size_text(num_bytes: float) -> str:
    """A file's size as people read it: 900 -> "900 bytes", 5000 -> "5 KB", 1.5 * 2**20 -> "1.5 MB"."""
    if num_bytes < 1024:
        return f"{num_bytes:.0f} bytes"
    if num_bytes < 1024 * 1024:
        return f"{num_bytes / 1024:.0f} KB"
    unit, scale = ("MB", 2**20) if num_bytes < 2**30 else ("GB", 2**30)
    value = num_bytes / scale
    return f"{value:.3g} {unit}" if value < 100 else f"{value:.0f} {unit}"


def age(value: float | None) -> str:
    """How long ago, from an age in seconds."""
    if value is None:
        return "never"
    if value < 60:
        return f"{value:.0f} s ago"
    return f"{duration(value)} ago"


def percent(value: float | None) -> str:
    return "–" if value is None else f"{value:.0%}"
