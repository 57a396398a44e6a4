"""ONNX runtime layer: model manifests, preprocessing, sessions, decoders and the Detector.

Nothing is loaded at import time; build a :class:`edge.runtime.detector.Detector` from a
manifest (:func:`edge.runtime.registry.load_manifest` / ``Detector.from_name``).
"""
