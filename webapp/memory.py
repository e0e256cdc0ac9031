"""Give freed memory back to the operating system.

PyTorch on the CPU allocates activations with malloc; glibc keeps freed
blocks in its heap, so a process's resident memory creeps up after each
inference even though nothing is kept. ``malloc_trim`` returns those pages.
"""

from __future__ import annotations

import ctypes
import ctypes.util

try:
    _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    _malloc_trim = _libc.malloc_trim
except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to do
    _malloc_trim = None


def release_freed_memory() -> None:
    """Return the heap's free pages to the OS (glibc); a no-op elsewhere. Takes milliseconds."""
    if _malloc_trim is not None:
        _malloc_trim(0)
