"""The one place for numba compile options, so that no kernel picks its own.

fastmath stays off: it lets LLVM assume that no value is NaN, and a NaN (a
missing or failed reading) must never be mistaken for a safe one.
"""

JIT = {"cache": True, "nogil": True, "fastmath": False}
