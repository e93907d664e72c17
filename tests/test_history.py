import pytest
import torch

from simgan.history import HistoryBuffer


def _imgs(values):
    return torch.tensor(values, dtype=torch.float32).view(-1, 1, 1, 1)


def test_fills_first_in_order_then_replaces_half_batch_at_random():
    g = torch.Generator().manual_seed(0)
    buf = HistoryBuffer(8, (1, 1, 1), dtype=torch.float32)
    buf.add(_imgs([1, 2, 3]), g)
    assert len(buf) == 3 and not buf.full
    buf.add(_imgs([4, 5, 6, 7, 8, 9]), g)  # 5 fill the empty slots, 1 replaces a random slot
    assert buf.full and len(buf) == 8
    stored = sorted(buf.images.view(-1).tolist())
    assert 9.0 in stored and len(set(stored) & {1, 2, 3, 4, 5, 6, 7, 8}) == 7  # one random slot gave way
    before = buf.images.clone()
    buf.add(_imgs([100, 101, 102, 103]), g)  # b/2 = 4 new images replace exactly 4 slots
    changed = (buf.images != before).view(-1)
    assert int(changed.sum()) == 4
    assert sorted(buf.images.view(-1)[changed].tolist()) == [100, 101, 102, 103]


def test_never_returns_an_unwritten_slot():
    g = torch.Generator().manual_seed(1)
    buf = HistoryBuffer(1000, (1, 1, 1), dtype=torch.float32)
    buf.images.fill_(float("nan"))  # poison: an unwritten slot would show up as NaN
    buf.add(_imgs([5, 6]), g)
    s = buf.sample(500, g)
    assert torch.isfinite(s).all() and set(s.view(-1).tolist()) == {5.0, 6.0}


def test_empty_buffer_refuses_to_sample_and_capacity_must_be_positive():
    with pytest.raises(RuntimeError, match="empty"):
        HistoryBuffer(4, (1, 1, 1)).sample(2, torch.Generator())
    with pytest.raises(ValueError, match="capacity B"):
        HistoryBuffer(0, (1, 1, 1))


def test_wrong_shape_is_refused():
    buf = HistoryBuffer(4, (1, 35, 55))
    with pytest.raises(ValueError, match="35, 55"):
        buf.add(torch.zeros(2, 1, 55, 35), torch.Generator())


def test_state_dict_round_trip_keeps_only_written_slots():
    g = torch.Generator().manual_seed(2)
    buf = HistoryBuffer(16, (1, 2, 2))
    buf.add(torch.randn(5, 1, 2, 2), g)
    state = buf.state_dict()
    assert state["images"].shape[0] == 5
    other = HistoryBuffer(16, (1, 2, 2))
    other.load_state_dict(state)
    assert len(other) == 5 and torch.equal(other.images[:5], buf.images[:5])
