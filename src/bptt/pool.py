"""Reuse of the large buffers of finished passes.

A fresh NumPy array of a few MiB costs a page fault for every 4 KiB page the first time it is
written, because the C library gives freed blocks of that size back to the operating system
and takes new ones for the next pass. On the benchmark machine (docs/performance.md) an LSTM
forward at T=100, B=32, H=256 spent 15 of its 40 ms faulting in its cache. The engine takes
its buffers from :data:`POOL` instead, which keeps them and hands them out again.

A buffer is handed out again only when nothing refers to it any more: no cache, no view and no
result that a caller kept (its reference count says so). Reuse therefore never changes an
array that anyone can still see; an array a caller keeps simply keeps its buffer out of the
pool. The pool holds at most ``max_bytes``; ``POOL.clear()`` lets go of everything.
"""

import sys
import threading

import numpy as np


class BufferPool:
    """Buffers by size in bytes; ``empty(shape, dtype)`` is ``np.empty`` that may reuse one."""

    def __init__(self, max_bytes=1 << 30, min_bytes=1 << 16):
        self.max_bytes = max_bytes
        self.min_bytes = min_bytes  # smaller arrays come from NumPy's own small-block cache
        self._buffers = {}  # nbytes -> list of 1-D uint8 arrays
        self._held = 0
        self._lock = threading.Lock()
        self._free_refs = self._refs([np.empty(1, np.uint8)], 0)

    @staticmethod
    def _refs(buffers, index):
        """The reference count of ``buffers[index]``; calibrated on a buffer no one holds."""
        return sys.getrefcount(buffers[index])

    def _is_free(self, buffers, index):
        return self._refs(buffers, index) == self._free_refs

    def empty(self, shape, dtype):
        """An uninitialised array of ``shape`` and ``dtype``, like ``np.empty``."""
        dtype = np.dtype(dtype)
        nbytes = int(np.prod(shape)) * dtype.itemsize
        if not self.min_bytes <= nbytes <= self.max_bytes:
            return np.empty(shape, dtype)
        with self._lock:
            buffers = self._buffers.setdefault(nbytes, [])
            for index in range(len(buffers)):
                if self._is_free(buffers, index):
                    return buffers[index].view(dtype).reshape(shape)
            buffer = np.empty(nbytes, np.uint8)
            if self._held + nbytes > self.max_bytes:
                self._evict(self._held + nbytes - self.max_bytes)
            if self._held + nbytes <= self.max_bytes:
                buffers.append(buffer)
                self._held += nbytes
        return buffer.view(dtype).reshape(shape)

    def _evict(self, nbytes):
        """Drop free buffers until ``nbytes`` are released or none is free."""
        for size, buffers in self._buffers.items():
            for index in reversed(range(len(buffers))):
                if nbytes <= 0:
                    return
                if self._is_free(buffers, index):
                    del buffers[index]
                    self._held -= size
                    nbytes -= size

    def clear(self):
        """Forget every buffer (those still in use stay alive with their users)."""
        with self._lock:
            self._buffers.clear()
            self._held = 0

    @property
    def held_bytes(self):
        """Bytes of the buffers the pool holds, in use or free."""
        return self._held


POOL = BufferPool()
