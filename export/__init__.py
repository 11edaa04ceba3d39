"""ecgedge export: training run → verified model bundle (ONNX, INT8, gates, manifest, card).

Entry point: :func:`export.build.build_bundle` (``ecgedge export``).
"""

__all__: list[str] = []
