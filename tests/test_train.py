"""Model selection and batching in the training loop."""

import torch
from odrec_export.train.loop import BestEpoch, TrainConfig, trim_padding


def test_best_epoch_keeps_the_best_weights_and_stops_after_patience():
    model = torch.nn.Linear(1, 1)
    sel = BestEpoch(patience=2)
    for epoch, hr in enumerate([0.1, 0.3, 0.2], 1):
        with torch.no_grad():
            model.weight.fill_(epoch)
        sel.update(model, epoch, {"HR@10": hr})
    assert sel.epoch == 2 and sel.state["weight"].item() == 2 and not sel.exhausted
    sel.update(model, 4, {"HR@10": 0.25})
    assert sel.exhausted


def test_without_validation_the_last_epoch_wins():
    model = torch.nn.Linear(1, 1)
    sel = BestEpoch(patience=1)
    for epoch in (1, 2, 3):
        assert sel.update(model, epoch, {})
    assert sel.epoch == 3 and not sel.exhausted


def test_trim_padding_keeps_every_used_column():
    ids = torch.tensor([[0, 0, 0, 1, 2], [0, 0, 3, 4, 5]])
    assert trim_padding(ids).tolist() == [[0, 1, 2], [3, 4, 5]]
    assert trim_padding(torch.zeros(2, 4, dtype=torch.long)).shape == (2, 1)


def test_max_batches_serves_a_random_subset_of_full_batches(diginetica):
    import torch
    from odrec_export.train.loop import SampleBatches

    batches = SampleBatches(diginetica, 20)
    full = list(batches.batches(32, torch.Generator().manual_seed(0)))
    some = list(batches.batches(32, torch.Generator().manual_seed(0), limit=3))
    assert len(full) == batches.count(32) and len(some) == 3 == batches.count(32, 3)
    assert all(torch.equal(a[1], b[1]) for a, b in zip(full, some))  # the same shuffled order, cut short
    assert sum(len(t) for _, t in full) == len(batches)


def test_cosine_schedule_falls_from_the_set_rate_to_zero():
    import pytest
    from odrec_export.errors import UsageError
    from odrec_export.train.loop import lr_factor

    assert [lr_factor("cosine", d) for d in (0.0, 0.5, 1.0)] == pytest.approx([1.0, 0.5, 0.0], abs=1e-12)
    assert lr_factor("constant", 0.7) == 1.0
    with pytest.raises(UsageError, match="schedule 'linear'"):
        lr_factor("linear", 0.0)


def test_training_records_the_rate_each_epoch_ended_at(diginetica):
    from odrec_export.train.loop import TrainConfig, train_teacher

    enc = {"dim": 16, "max_len": 10}
    runs = {s: train_teacher(diginetica, enc, TrainConfig(epochs=2, max_batches=4, lr_schedule=s), log=lambda _: None)[1]
            for s in ("constant", "cosine")}
    const = [h["lr"] for h in runs["constant"].provenance["history"]]
    cos = [h["lr"] for h in runs["cosine"].provenance["history"]]
    assert const == [1e-3, 1e-3] and 1e-3 > cos[0] > cos[1] > 0


def test_a_continuation_that_validates_worse_keeps_its_start(diginetica):
    """A run continued from a checkpoint (--init, finetune) returns its start when no epoch beats it."""
    from odrec_export.models.encoder import EncoderConfig
    from odrec_export.models.registry import build_model
    from odrec_export.train.loop import cross_entropy_loss, fit

    torch.manual_seed(0)
    model = build_model({"encoder": EncoderConfig(num_items=diginetica.num_items, dim=16, max_len=10).to_dict(),
                         "compressor": "none", "items": {}})
    fit(model, diginetica, TrainConfig(epochs=2), cross_entropy_loss, log=lambda _: None)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    lines = []
    history = fit(model, diginetica, TrainConfig(epochs=1, lr=50.0), cross_entropy_loss, log=lines.append,
                  keep_start=True)  # a rate that wrecks the model
    assert history["best_epoch"] == 0 and any("keeping the start" in line for line in lines)
    assert all(torch.equal(v, start[k]) for k, v in model.state_dict().items())


def test_a_time_limit_ends_the_running_epoch_validates_it_and_stops(diginetica):
    from odrec_export.models.encoder import EncoderConfig
    from odrec_export.models.registry import build_model
    from odrec_export.train.loop import cross_entropy_loss, fit

    torch.manual_seed(0)
    model = build_model({"encoder": EncoderConfig(num_items=diginetica.num_items, dim=16, max_len=10).to_dict(),
                         "compressor": "none", "items": {}})
    lines = []
    history = fit(model, diginetica, TrainConfig(epochs=5, time_limit=1e-9), cross_entropy_loss, log=lines.append)
    assert history["epochs_run"] == 1 and history["best_epoch"] == 1 and history["history"][0]["valid"]
    assert any(line.startswith("time limit:") and "after 1 of " in line for line in lines), lines
