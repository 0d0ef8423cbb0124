"""The sparse inference path: batch-1 GEMV kernels, ``SparseLinear`` and decode timing.

It sits beside the solver, not in it (ARCHITECTURE.md, "The solver side"): the solver produces
masks and weights, this package consumes a run directory and measures what they buy at decode
time. ``cpu`` holds the compiled kernels, ``sparse_linear`` the drop-in module, ``speed`` the
per-layer and end-to-end measurements behind ``duogpt speed``.
"""
