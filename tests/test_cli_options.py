"""The command line is a thin layer: its defaults are the library's, and no function in cli.py is long."""

from __future__ import annotations

import ast
import inspect
from dataclasses import MISSING, fields
from pathlib import Path

import pytest
from odrec_export import cli_options as O

CLI = Path(O.__file__).with_name("cli.py")


def _dataclass_defaults(cls) -> dict:
    return {f.name: f.default for f in fields(cls) if f.default is not MISSING}


@pytest.mark.parametrize("module, name, target", [
    ("train.loop", "TrainConfig", "odrec_export.train.loop:TrainConfig"),
    ("models.encoder", "EncoderConfig", "odrec_export.models.encoder:EncoderConfig"),
    ("train.distill", "DistillConfig", "odrec_export.train.distill:DistillConfig"),
    ("train.code_learning", "CodeLearningConfig", "odrec_export.train.code_learning:CodeLearningConfig"),
    ("data.sessions", "ClickLogProtocol", "odrec_export.data.sessions:ClickLogProtocol"),
    ("export.options", "BuildOptions", "odrec_export.export.options:BuildOptions"),
])
def test_library_defaults_are_the_dataclasses(module, name, target):
    import importlib

    mod, cls = target.split(":")
    assert O.library_defaults(module, name) == _dataclass_defaults(getattr(importlib.import_module(mod), cls))


def test_library_defaults_of_functions():
    from odrec_export.train.repeat_fit import fit_repeat_bonus
    from odrec_export.verify.parity import verify

    for fn, module in ((fit_repeat_bonus, "train.repeat_fit"), (verify, "verify.parity")):
        want = {n: p.default for n, p in inspect.signature(fn).parameters.items()
                if p.default is not p.empty and not callable(p.default)}
        got = O.library_defaults(module, fn.__name__)
        assert {n: got[n] for n in want if n in got} == {n: want[n] for n in want if n in got}
        assert "metric" in got or "sessions" in got


def test_command_defaults_are_the_library_defaults():
    from odrec_export import pipeline
    from odrec_export.train.loop import TrainConfig

    signature = inspect.signature(__import__("odrec_export.cli", fromlist=["train"]).train)
    defaults = {n: p.default.default for n, p in signature.parameters.items()}
    for name in O.TRAIN_FIELDS:
        assert defaults[name] == getattr(TrainConfig, name), name
    assert pipeline.finetune_config().lr == pipeline.FINETUNE_TRAINING["lr"]
    assert all(defaults[n] is None for n in O.ITEMS)  # each compressor's own default applies


def test_compressor_declarations_are_the_registry():
    from odrec_export import compressors

    real = {n: {"summary": c.summary, "options": c.options} for n, c in compressors.all_compressors().items()}
    assert O.compressor_declarations() == real
    assert {o for c in real.values() for o in c["options"]} <= set(O.ITEMS)  # every option reaches the CLI


def test_no_long_function_in_cli():
    tree = ast.parse(CLI.read_text())
    lengths = {n.name: n.end_lineno - n.lineno + 1 for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
    assert max(lengths.values()) <= 40, sorted(lengths.items(), key=lambda kv: -kv[1])[:3]
