"""Where the application called the pool from: the file:line a warning names.

Only the first frame outside poolkeeper's own package is read (a single frame,
not a stack), and only its code object and instruction offset are kept (a
:data:`Mark`, turned into a line number only when a warning needs it): keeping
the frame itself would keep the caller's locals, the connection among them,
alive.
"""

from __future__ import annotations

import os
import sys
from collections import Counter
from collections.abc import Iterable
from types import CodeType, FrameType

#: Frames from files under this directory are poolkeeper's own.
PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep

#: File names found outside poolkeeper (a bounded cache): ``acquire()``
#: tests its caller's file against it, a set lookup, and calls
#: :func:`outside_frame` only on a miss.
OUTSIDE_FILES: set[str] = set()
MAX_OUTSIDE_FILES = 4096

Site = tuple[str, int]
#: A site as (code object, instruction offset): cheaper to take than a line.
Mark = tuple[CodeType, int]


def outside_frame(frame: FrameType) -> FrameType:
    """Return the nearest frame, from ``frame`` up, outside poolkeeper."""
    start: FrameType | None = frame
    while start is not None:
        filename = start.f_code.co_filename
        if not filename.startswith(PACKAGE_DIR):
            if len(OUTSIDE_FILES) < MAX_OUTSIDE_FILES:
                OUTSIDE_FILES.add(filename)
            return start
        start = start.f_back
    return frame


def site_of(mark: Mark | None) -> Site | None:
    """The ``(file, line)`` of a :data:`Mark`."""
    if mark is None:
        return None
    code, offset = mark
    for start, end, line in code.co_lines():
        if start <= offset < end and line is not None:
            return code.co_filename, line
    return code.co_filename, code.co_firstlineno


def caller_site(frame: FrameType | None = None) -> Site:
    """Return ``(file, line)`` of the nearest caller outside poolkeeper.

    Args:
        frame: Where to start looking (default: the caller of this function).
    """
    outside = outside_frame(sys._getframe(1) if frame is None else frame)
    return outside.f_code.co_filename, outside.f_lineno


def format_site(site: Site | None) -> str:
    """``file:line`` of a site, or a placeholder when it is not known."""
    if site is None:
        return "(unknown site)"
    return f"{site[0]}:{site[1]}"


#: How many sites a PoolTimeout message names at most.
MAX_NAMED_SITES = 3


def holders(marks: Iterable[Mark | None]) -> str:
    """Say where the connections of a full pool were acquired, most held first.

    ``marks`` are the sites of the checked-out connections; an empty string
    unless every one was lent by ``acquire()`` (has a site), since then those
    call sites are where a missing ``release()`` would be.
    """
    sites: list[Site] = []
    for mark in marks:
        site = site_of(mark)
        if site is None:
            return ""
        sites.append(site)
    if not sites:
        return ""
    counts = Counter(sites).most_common()
    named = ", ".join(
        f"{format_site(site)}{f' (x{n})' if n > 1 else ''}"
        for site, n in counts[:MAX_NAMED_SITES]
    )
    more = len(counts) - MAX_NAMED_SITES
    if more > 0:
        named += f" and {more} more site{'s' if more > 1 else ''}"
    return f"every connection is held through acquire(), from {named}"
