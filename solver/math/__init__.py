"""The pure math of pruning: OBC/SparseGPT solves, masks, statistics, activation sparsity, byte
bounds. Tensors in, tensors out: nothing here reads a file, loads a model or imports from
:mod:`solver.io` or :mod:`solver.run` (a test enforces it)."""
