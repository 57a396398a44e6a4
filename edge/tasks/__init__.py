"""Task logic on top of detections: what the three APIs and the camera pipeline answer.

- :mod:`edge.tasks.fence`: people/vehicles inside a polygon.
- :mod:`edge.tasks.hardhat`: heads with/without a hard hat, and the hat colour.
- :mod:`edge.tasks.workwear`: people with/without workwear, and its colour.
- :mod:`edge.tasks.colour`: colour naming from HSV statistics of a crop.
- :mod:`edge.tasks.wearing`: worn, not held -- which hat is on which person's head.
- :mod:`edge.tasks.compliance`: the per-person three-way result (compliant, violation,
  cannot_tell) and the subjects the camera pipeline tracks.
- :mod:`edge.tasks.rules`: what a zone requires (hat/workwear colours, reflective).
"""
