"""Letting go of a file mapping's pages (webapp/memory.py): only file-backed pages, and they read back intact."""

from __future__ import annotations

import mmap
import os

import numpy as np

from webapp.memory import drop_file_pages, file_mapped_ranges


def test_file_pages_are_dropped_and_read_back_from_the_file_while_anonymous_memory_is_never_touched(tmp_path):
    page = os.sysconf("SC_PAGE_SIZE")
    data = os.urandom(8 * page)
    path = tmp_path / "weights.safetensors"
    path.write_bytes(data)
    with path.open("rb") as handle:
        mapping = mmap.mmap(handle.fileno(), 0, prot=mmap.PROT_READ)
    try:
        view = np.frombuffer(mapping, dtype=np.uint8)
        assert bytes(view) == data  # every page resident now
        address = view.ctypes.data
        ranges = file_mapped_ranges()
        assert any(low <= address < high for low, high in ranges)
        drop_file_pages(address + 100, len(data) - 200, ranges)  # unaligned: whole inner pages only
        assert bytes(view) == data  # re-read from the file, unchanged
        del view
    finally:
        mapping.close()

    anonymous = np.frombuffer(os.urandom(8 * page), dtype=np.uint8).copy()
    before = anonymous.tobytes()
    drop_file_pages(anonymous.ctypes.data, anonymous.nbytes, file_mapped_ranges())
    assert anonymous.tobytes() == before  # not a file mapping: left alone (dropping would zero it)
    assert not any(low <= anonymous.ctypes.data < high for low, high in file_mapped_ranges())
