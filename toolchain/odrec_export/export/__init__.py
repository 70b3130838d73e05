"""Frozen model → ONNX graph → artifact directory: ``build(ckpt, out, BuildOptions(...))``.

``encoder.py`` exports the encoder, ``assemble.py`` puts it between the input cleaning, the
compressor's head and the top-k, ``evaluate.py`` measures a graph's accuracy through onnxruntime,
``writer.py`` writes the directory; ``artifact.py`` (the contract) and ``id_map.py`` import nothing
heavy, so ``build`` is loaded only when asked for.
"""

__all__ = ["BuildOptions", "build"]


def __getattr__(name: str):
    if name == "build":
        from .writer import build
        return build
    if name == "BuildOptions":
        from .options import BuildOptions
        return BuildOptions
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
