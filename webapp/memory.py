"""Give freed memory back to the operating system.

PyTorch on the CPU allocates activations with malloc; glibc keeps freed
blocks in its heap, so a process's resident memory creeps up after each
inference even though nothing is kept. ``malloc_trim`` returns those pages.
"""

from __future__ import annotations

import ctypes
import os
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


MADV_DONTNEED = 4  # Linux
try:
    _madvise = _libc.madvise
    _madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
except (NameError, AttributeError):
    _madvise = None


def file_mapped_ranges(suffix: str = ".safetensors") -> list[tuple[int, int]]:
    """Address ranges of this process's mappings of files ending in ``suffix`` (Linux; [] elsewhere)."""
    ranges = []
    try:
        with open("/proc/self/maps", "rb") as maps:
            for line in maps:
                fields = line.split(maxsplit=5)
                if len(fields) == 6 and fields[5].strip().endswith(suffix.encode()):
                    start, end = (int(x, 16) for x in fields[0].split(b"-"))
                    ranges.append((start, end))
    except OSError:
        return []
    return ranges


def drop_file_pages(address: int, length: int, ranges: list[tuple[int, int]]) -> None:
    """Let go of the resident pages of a region of a read-only file mapping whose data was copied elsewhere.

    Loaded weights are views of the memory-mapped safetensors file; copying
    them all into the process's memory would hold every page twice (the
    file's touched pages stay resident while it is mapped) and double the
    start-up peak. Dropping each copied tensor's pages right away keeps the
    peak at one copy. Only whole pages inside a file mapping are dropped:
    they are clean (weights are never written), so touching one again would
    just read it from the file.
    """
    if _madvise is None or length <= 0:
        return
    page = os.sysconf("SC_PAGE_SIZE")
    start = (address + page - 1) // page * page
    end = (address + length) // page * page
    if start < end and any(low <= start and end <= high for low, high in ranges):
        _madvise(start, end - start, MADV_DONTNEED)
