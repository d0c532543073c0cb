"""Where the application called the pool from: the file:line a warning names.

Only the first frame outside poolkeeper's own package is read (a single frame,
not a stack), and only its file name and line number are kept: keeping the
frame itself would keep the caller's locals, the connection among them, alive.
"""

from __future__ import annotations

import os
import sys
from types import FrameType

#: Frames from files under this directory are poolkeeper's own.
PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep

Site = tuple[str, int]


def caller_site(frame: FrameType | None = None) -> Site:
    """Return ``(file, line)`` of the nearest caller outside poolkeeper.

    Args:
        frame: Where to start looking (default: the caller of this function).
    """
    if frame is None:
        frame = sys._getframe(1)
    start = frame
    while frame is not None:
        filename = frame.f_code.co_filename
        if not filename.startswith(PACKAGE_DIR):
            return filename, frame.f_lineno
        frame = frame.f_back
    return start.f_code.co_filename, start.f_lineno


def format_site(site: Site | None) -> str:
    """``file:line`` of a site, or a placeholder when it is not known."""
    if site is None:
        return "(unknown site)"
    return f"{site[0]}:{site[1]}"
