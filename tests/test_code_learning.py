"""Code learning from a real (tiny) teacher: valid codes, exact composition, better than chance."""

import pytest
import torch
from odrec_export.compressors.codes import CodesItemTable
from odrec_export.train.code_learning import (
    CodeLearningConfig,
    code_usage,
    compose,
    fit_codebooks,
    learn_codes,
    residual_kmeans,
)


def test_code_usage_known_answer():
    codes = torch.tensor([[0, 1], [0, 1], [2, 3], [2, 0]], dtype=torch.uint8)
    u = code_usage(codes, k=4)
    assert u["codewords_used"] == [2, 3]
    assert u["distinct_codes"] == 3
    assert u["items_sharing_a_code"] == 2  # the first two items
    assert u["items"] == 4


def test_fit_codebooks_recovers_an_exact_table():
    torch.manual_seed(0)
    m, k, d, n = 3, 5, 4, 200
    books = torch.randn(m, k, d)
    codes = torch.randint(0, k, (n, m))
    table = compose(codes, books)
    fitted = fit_codebooks(codes, table, k, ridge=1e-9)
    # codebooks are only identified up to shifts between codebooks; the composed table is exact
    assert torch.allclose(compose(codes, fitted), table, atol=1e-4)


@pytest.fixture(scope="module")
def teacher_and_data(tiny_checkpoints, diginetica):
    from odrec_export.train.loading import load_teacher

    torch.set_num_threads(1)
    teacher, _ = load_teacher(tiny_checkpoints[0], diginetica)
    return teacher, diginetica


@pytest.fixture(scope="module")
def learned(teacher_and_data):
    teacher, data = teacher_and_data
    cfg = CodeLearningConfig(m=4, k=16, warmup_steps=100, steps=120, rec_pool=512, rec_batch=256)
    return learn_codes(teacher, data, cfg, log=lambda s: None)


def test_learned_codes_are_valid(learned, teacher_and_data):
    teacher, data = teacher_and_data
    codes, books = learned["codes"], learned["codebooks"]
    assert codes.dtype == torch.uint8 and codes.shape == (data.num_items + 1, 4)
    assert int(codes.min()) >= 0 and int(codes.max()) < 16
    assert torch.all(codes[0] == 0)
    assert books.shape == (4, 16, teacher.encoder.cfg.dim) and torch.isfinite(books).all()
    usage = learned["report"]["usage"]
    assert usage["items"] == data.num_items and all(1 <= u <= 16 for u in usage["codewords_used"])
    assert usage["distinct_codes"] > data.num_items // 2  # the codes tell most items apart


def test_learned_codes_beat_random_codes(learned, teacher_and_data):
    teacher, _ = teacher_and_data
    table = teacher.items.table().detach()[1:]
    scale = table.pow(2).mean()
    random_codes = torch.randint(0, 16, (len(table), 4), generator=torch.Generator().manual_seed(1))
    random_mse = ((compose(random_codes, fit_codebooks(random_codes, table, 16)) - table).pow(2).mean() / scale)
    assert learned["report"]["final_relative_mse"] < 0.8 * float(random_mse)
    assert learned["report"]["pool_ce_codes"] < learned["report"]["pool_ce_teacher"] + 1.0


def test_composed_table_is_the_sum_of_codewords(learned, teacher_and_data):
    teacher, data = teacher_and_data
    items = CodesItemTable(data.num_items, teacher.encoder.cfg.dim, m=4, k=16)
    items.set_codes(learned["codes"])
    with torch.no_grad():
        items.codebooks.copy_(learned["codebooks"])
    table = items.table().detach()
    codes, books = learned["codes"].long(), learned["codebooks"]
    for v in (1, 2, data.num_items // 2, data.num_items):
        expected = books[0, codes[v, 0]] + books[1, codes[v, 1]] + books[2, codes[v, 2]] + books[3, codes[v, 3]]
        assert torch.allclose(table[v], expected)
    assert torch.all(table[0] == 0)
    ids = torch.tensor([[0, 1, 5], [3, 3, 2]])
    assert torch.allclose(items.lookup(ids), table[ids])


def test_residual_kmeans_codebooks_shrink_the_residual(teacher_and_data):
    teacher, _ = teacher_and_data
    table = teacher.items.table().detach()[1:]
    errs = []
    for m in (1, 2, 3):
        codes, books = residual_kmeans(table, m, 8, iters=10)
        errs.append(float((compose(codes, books) - table).pow(2).mean()))
    assert errs[0] > errs[1] > errs[2]
