"""Item tables: score tables of the codes table agree with dot products against its composed table."""

import torch

from odrec_export.compressors.codes import CodesItemTable
from odrec_export.compressors.full_table import FullItemTable


def test_codes_score_tables_equal_dot_products_and_tie_exactly():
    torch.manual_seed(0)
    items = CodesItemTable(num_items=50, dim=16, m=3, k=8)
    codes = torch.randint(0, 8, (51, 3))
    codes[7] = codes[9]  # two items sharing a code
    items.set_codes(codes)
    sessions = torch.randn(5, 16)
    scores = items.score(sessions)
    assert scores.shape == (5, 51)
    assert torch.allclose(scores[:, 1:], (sessions @ items.table().t())[:, 1:], atol=1e-5)
    assert torch.equal(scores[:, 7], scores[:, 9])


def test_full_table_scores_are_dot_products():
    items = FullItemTable(num_items=10, dim=4)
    s = torch.randn(2, 4)
    assert torch.allclose(items.score(s), s @ items.weight.t())
