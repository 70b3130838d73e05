"""What every head ends with: the repeat bonus (for models that have one) and the top-k.

Heads score items 1..N only (no padding column), so score column j is item j + 1 and a session slot
indexes the scores with ``ids - 1``. Padding slots index -1 (the last item) with a zero update, which
leaves every score unchanged. The tail runs either over the whole batch (B × N scores, ``batch``) or
inside a ``Loop`` body over one row (N scores, ``row``); both write the same nodes.
"""

from __future__ import annotations

from dataclasses import dataclass

from .graph import Graph


@dataclass
class ScoringTail:
    ids_m1: str  # B × L int64: the cleaned session's item ids minus 1 (padding: -1)
    updates: str | None  # B × L float: each real slot's repeat-bonus weight, 0 at padding; None: no bonus
    top_k: str  # name of a 1-element int64 constant holding k
    one: str  # name of the int64 scalar constant 1

    def batch(self, g: Graph, scores: str, out_scores: str, out_ids: str) -> None:
        """B × N scores → the graph's outputs."""
        self._finish(g, scores, self.ids_m1, self.updates, 1, out_scores, out_ids, prefix="")

    def row(self, body: Graph, scores: str, row: str, prefix: str) -> tuple[str, str]:
        """N scores of batch row ``row`` (a Loop body) → (top scores, top ids), k each."""
        ids = updates = None
        if self.updates is not None:
            ids = body.op("Gather", [self.ids_m1, row], prefix + "slot_items", axis=0)
            updates = body.op("Gather", [self.updates, row], prefix + "slot_bonus", axis=0)
        return self._finish(body, scores, ids, updates, 0, prefix + "top_scores", prefix + "top_ids", prefix)

    def _finish(self, g: Graph, scores: str, ids: str | None, updates: str | None, axis: int,
                out_scores: str, out_ids: str, prefix: str) -> tuple[str, str]:
        if updates is not None:
            scores = g.op("ScatterElements", [scores, ids, updates], prefix + "item_scores_with_repeat", axis=axis,
                          reduction="add")
        g.op("TopK", [scores, self.top_k], [out_scores, prefix + "top_pos"], axis=axis, largest=1, sorted=1)
        g.op("Add", [prefix + "top_pos", self.one], out_ids)
        return out_scores, out_ids
