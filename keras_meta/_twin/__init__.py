"""NumPy reference twins of the C++ routines in `keras_meta._core`.

Each twin computes the same values as its native counterpart from the same arguments;
tests compare the two and benchmarks use the twins as the vectorised-NumPy baseline.
"""
