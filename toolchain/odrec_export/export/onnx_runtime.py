"""The one way this package opens an onnxruntime session on the host's CPU.

Each caller keeps its own options: build (evaluation, ``model.ort`` conversion), bench and
size-report (timing, memory), verify and the Android fixture. Imports nothing but onnxruntime, and that
only when called, so that report.py's memory probe counts no more than it did.
(The aarch64 guest script in arm_runtime.py runs without this package and opens its own.)
"""

from __future__ import annotations

from pathlib import Path

OPTIMIZATION_LEVELS = ("disable", "basic", "extended", "all")


def ort_session(model, threads: int | None = 1, *, inter_threads: int | None = 1, spin: bool = True,
                log_level: int | None = 3, config: dict | None = None, optimization: str | None = None,
                optimized_path: str | Path | None = None, **session_kwargs):
    """An onnxruntime ``InferenceSession`` on ``CPUExecutionProvider``.

    ``model``: an ``onnx.ModelProto``, serialized bytes, or a path (a path lets onnxruntime tell .ort
    from .onnx). ``threads`` / ``inter_threads``: intra-/inter-op threads, None for onnxruntime's
    default. ``spin=False`` stops idle worker threads from spin-waiting: benchmarks that keep several
    multi-threaded sessions open use it, or the idle ones steal the cores. ``log_level``: onnxruntime's
    log severity (3: errors only, 4: fatal only; None: its default). ``config``: session config entries.
    ``optimization``: graph optimisation level (one of ``OPTIMIZATION_LEVELS``; None: the default, all).
    ``optimized_path``: where onnxruntime writes the optimised model. ``session_kwargs`` go to
    ``InferenceSession`` (e.g. ``disabled_optimizers``).
    """
    import onnxruntime as ort

    so = ort.SessionOptions()
    if threads is not None:
        so.intra_op_num_threads = threads
    if inter_threads is not None:
        so.inter_op_num_threads = inter_threads
    if log_level is not None:
        so.log_severity_level = log_level
    if not spin:
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    for key, value in (config or {}).items():
        so.add_session_config_entry(key, value)
    if optimization is not None:
        so.graph_optimization_level = {
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL, "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}[optimization]
    if optimized_path is not None:
        so.optimized_model_filepath = str(optimized_path)
    if hasattr(model, "SerializeToString"):  # an onnx.ModelProto (not imported here: see the module docstring)
        model = model.SerializeToString()
    elif not isinstance(model, bytes):
        model = str(model)
    return ort.InferenceSession(model, so, providers=["CPUExecutionProvider"], **session_kwargs)
