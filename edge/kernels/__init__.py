"""Pure numpy kernels: no I/O, no globals, shapes and dtypes in every docstring.

- :mod:`edge.kernels.nms`: exact greedy non-maximum suppression (OpenCV-identical keep
  sets), class-aware, vectorized.
- :mod:`edge.kernels.geometry`: point-in-polygon, box anchors, area-string parsing and
  polygon validation, box/polygon overlap.
"""
