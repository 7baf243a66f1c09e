"""The one place for numba compile options, so that no kernel picks its own.

fastmath stays off: it lets LLVM assume that no value is NaN, and a NaN (a
missing or failed reading) must never be mistaken for a safe one.

The numba runtime (NRT) is off: it reference-counts every array a kernel touches with
atomic operations, on each call and each helper call, which was a third of the time of
a cycle. Kernels therefore allocate nothing: their callers pass every array in.

Numba's on-disk cache is keyed on each kernel's own source file, not on this one:
after changing these options, clear the caches (``__pycache__/*.nb[ic]``).
"""

JIT = {"cache": True, "nogil": True, "fastmath": False, "_nrt": False}
