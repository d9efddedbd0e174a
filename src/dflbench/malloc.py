"""The process's C allocator, set for tensor workloads.

glibc serves an allocation above its mmap threshold (128 kB at start, raised only after a larger block is freed)
with a fresh mmap, so a loop that allocates and frees a 1 MB tensor per step pays a system call and 256 zeroed
pages each time: a 64 x 4096 sparse mixing step measured 0.87 ms per call in a fresh process and 0.14 ms once the
threshold was raised (2-core Xeon, one thread), and the speed of the same code depended on whatever ran before it.
`configure()` fixes the threshold at 64 MB and the trim threshold at 256 MB (freed memory is kept for reuse
instead of returned to the kernel page by page), once per process, before the work starts: the CLI and the
benchmarks call it, so every run and both arms of a benchmark see the same allocator.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3       # glibc's <malloc.h> parameter numbers
MMAP_THRESHOLD = 64 << 20
TRIM_THRESHOLD = 256 << 20


def configure() -> bool:
    """Raise glibc's mmap and trim thresholds (module docstring); True if set, False where the C library is not
    glibc (macOS, Windows, musl: nothing is changed there)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
