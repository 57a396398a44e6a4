"""Evaluation harness: COCO-style detection metrics over a YOLO-layout data set.

- :mod:`edge.eval.metrics`: pure numpy AP / mAP, P/R, confusion matrix.
- :mod:`edge.eval.dataset`: ``data.yaml`` + YOLO label reader.
- :mod:`edge.eval.report`: JSON + markdown report, annotated samples.
- :mod:`edge.eval.commands`: the ``safety-edge eval`` sub-command.

Nothing is loaded at import time.
"""
