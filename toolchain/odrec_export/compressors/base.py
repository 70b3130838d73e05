"""What a compressor is: an item table for training (``ItemTable``) and everything else about it
(``Compressor``): its options and defaults, how it is fitted to a teacher, its KD recipe, the arrays
it freezes to, its ONNX head, its manifest fields, its size-report parts, and how verify and bench
read it back. Each compressor lives in one module of this package; ``compressors/__init__.py`` finds
them, so nothing outside the module names a compressor.

Every table maps item indices 0..N (0 = padding) to d-dim vectors.

``FullItemTable`` is the uncompressed N×d table of the teacher. Compressed tables (codes, tensor
trains, CpRec blocks) implement the same methods, so the encoder and the training loops never need
to know which one they hold:

* ``lookup`` / ``table``: item vectors (the full table only for training and reference scoring);
* ``score``: B × (N+1) scores exactly as the exported graph computes them, ``log_probs``: the
  training distribution over items 1..N (a plain softmax of the scores unless the table has its
  own output layer, like CpRec's adaptive softmax);
* ``init_from_table``: fit the compressed form to a teacher's table before distillation;
* ``export_arrays``: the named arrays the artifact stores (names prefixed by the compressor).
"""

from __future__ import annotations

from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import UsageError
from ..export import artifact as A


class ItemTable(nn.Module):
    num_items: int
    dim: int
    dot_product_softmax = True  # log_probs is a softmax of session · item vectors (a sampled loss estimates it)

    def lookup(self, ids: torch.Tensor) -> torch.Tensor:
        """Vectors of the given indices (padding gives a zero vector)."""
        raise NotImplementedError

    def table(self) -> torch.Tensor:
        """All (N+1)×d vectors, row 0 = padding: for training and reference scoring only."""
        raise NotImplementedError

    def score(self, sessions: torch.Tensor) -> torch.Tensor:
        """B × (N+1) dot products of session vectors with every item vector."""
        return sessions @ self.table().t()

    def log_probs(self, sessions: torch.Tensor, table: torch.Tensor | None = None) -> torch.Tensor:
        """B × N log-probabilities of items 1..N (padding left out). ``table``: this module's
        ``table()`` when the caller already has it (training builds it once per step), which is
        cheaper than ``score`` for large batches."""
        scores = sessions @ table[1:].t() if table is not None else self.score(sessions)[:, 1:]
        return F.log_softmax(scores, dim=1)

    def init_from_table(self, table: torch.Tensor, counts: np.ndarray) -> dict:
        """Fit this representation to a teacher's (N+1)×d table (``counts``: training clicks per
        index); returns a JSON-able report (reconstruction error, sizes, ...)."""
        raise NotImplementedError(f"{type(self).__name__} cannot be initialised from a table")

    def export_arrays(self) -> dict[str, np.ndarray]:
        """The arrays the artifact stores, by initializer name."""
        raise NotImplementedError

    def config(self) -> dict:
        """Constructor keyword arguments that rebuild this table (``config["items"]`` of a checkpoint)."""
        return {}

    def bytes_report(self, parts: dict[str, int]) -> dict:
        """Extra figures for the checkpoint's ``item_bytes`` record (``parts``: bytes per parameter/buffer)."""
        return {}


# An ONNX head: called with the graph, the cleaned session ids, ids - 1, the real-slot mask and the
# scoring tail; writes ``enc/item_vectors`` and, through the tail, the top-k outputs (export.compose).
Head = Callable[..., None]


class Compressor:
    """One way of storing the item table. Subclasses set the class attributes and override what differs."""

    name: str
    summary: str  # one line for --help: what it stores, and its paper
    table_type: type[ItemTable]
    options: dict = {}  # the options it reads (train's --m, --rank, ...), with their defaults: defined here only
    kd_recipe = "odrec"  # distill.KD_RECIPES entry used unless --kd says otherwise
    fit_record = "item_fit"  # provenance key of the report of fitting it to the teacher
    holds_full_table = False  # its state may hold an N×d table (the uncompressed one only)
    quantises = False  # --quant (int8 codebooks) applies to it
    build_options: tuple[str, ...] = ()  # export.BuildOptions fields its head reads
    parts: dict[str, tuple[str, ...]] = {}  # size-report part → initializer names, or prefixes ending in "/"
    resized_options: tuple[str, ...] = ()  # items-config entries that follow N (synth-catalogue drops them)

    # ------------------------------------------------------------------ training

    def items_config(self, options: dict) -> dict:
        """``config["items"]`` of a checkpoint from user options (None or absent: the default)."""
        return {name: default if options.get(name) is None else options[name]
                for name, default in self.options.items() if default is not None or options.get(name) is not None}

    def table(self, num_items: int, dim: int, items_config: dict) -> ItemTable:
        return self.table_type(num_items, dim, **items_config)

    def fit(self, teacher, data, items_config: dict, options: dict, log=print, seed: int = 0,
            device: str = "cpu") -> tuple[ItemTable, dict]:
        """A table fitted to the teacher's item table (before distillation) and a JSON-able report."""
        table = self.table(teacher.num_items, teacher.encoder.cfg.dim, items_config)
        report = table.init_from_table(teacher.items.table().detach().cpu().float(), data.item_counts())
        return table, report

    # ------------------------------------------------------------------ freezing and export

    def arrays(self, table: ItemTable) -> dict[str, np.ndarray]:
        """What the artifact stores, by initializer name."""
        return {name: np.ascontiguousarray(a) for name, a in table.export_arrays().items()}

    def head(self, frozen, opts) -> Head:
        raise NotImplementedError

    def manifest(self, frozen, opts) -> dict:
        """The manifest's ``compressor`` block."""
        arrays = frozen.arrays
        return {"name": self.name, "d": frozen.dim, **frozen.items_config,
                "arrays": {n: list(a.shape) for n, a in sorted(arrays.items())},
                "item_representation_bytes": int(sum(a.nbytes for a in arrays.values()))}

    def quantisation(self, opts) -> dict:
        """The manifest's ``quantisation`` block (the encoder's entry is filled in by the exporter)."""
        return {"scheme": "fp32", "encoder": "fp32"}

    def describe(self, block: dict) -> str:
        """A short label of a manifest's compressor block (figures, summaries)."""
        return ""

    # ------------------------------------------------------------------ reading an artifact back

    def part_bytes(self, initializer_bytes: dict[str, int]) -> dict[str, int]:
        """Bytes per size-report part of the item representation."""
        def owned(name: str, keys: tuple[str, ...]) -> bool:
            return any(name.startswith(k) if k.endswith("/") else name == k for k in keys)
        return {part: sum(b for n, b in initializer_bytes.items() if owned(n, keys)) for part, keys in self.parts.items()}

    def check_graph(self, inits: dict, manifest: dict) -> list[str]:
        """verify's integrity check of the stored arrays against the manifest: failure messages."""
        return []

    def decoded_rows(self, inits: dict, manifest: dict, chunk: int) -> Iterator[np.ndarray]:
        """The fp32 item vectors of items 1..N, ``chunk`` rows at a time (bench's uncompressed baseline)."""
        raise UsageError(f"bench builds its fp32-table baseline by decoding the item representation, and a "
                         f"{self.name} artifact cannot be decoded that way; compare it with other artifacts: "
                         "bench --compare DIR1 DIR2 ...")

    def match_artifact(self, table: ItemTable, manifest: dict, round_trip) -> None:
        """Give a PyTorch table what the artifact's storage did to it (verify's reference); ``round_trip``
        (rows × d tensor, scheme) is verify's own quantise-dequantise."""

    def synthetic_config(self, source_items: dict) -> dict:
        """synth-catalogue: the source's ``config["items"]`` for another catalogue size."""
        return {k: v for k, v in source_items.items() if k not in self.resized_options}

    def synthetic_state(self, source, config: dict, rng, seed: int) -> dict:
        """synth-catalogue: the source checkpoint's state for the model ``config`` (another N), its item
        table built afresh."""
        from ..models.registry import build_model

        torch.manual_seed(seed)
        fresh = build_model(config).state_dict()
        return {name: (source.state_dict[name] if not name.startswith("items.") else t) for name, t in fresh.items()}


def all_columns_head(score_fn) -> Head:
    """A head from a function that writes the item vectors and returns B × (N+1) scores (column 0,
    padding, is sliced off here)."""
    def head(g, ids: str, ids_m1: str, mask: str, tail) -> None:
        scores_all = score_fn(g, ids, mask)
        g.const("col1", np.array([1], np.int64))
        g.const("end_max", np.array([np.iinfo(np.int64).max], np.int64))
        scores = g.op("Slice", [scores_all, "col1", "end_max", "axis1"], "item_scores")
        tail.batch(g, scores, A.OUTPUT_SCORES, A.OUTPUT_IDS)
    return head
