"""The controller's data cursor: a checkpoint records exactly the learned batches, so a resumed streaming run
makes every other batch once and skips none (the bug it fixes: in-flight batches were recorded as used)."""

from srum.actors.controller import Cursor


def test_in_order_learning_is_a_frontier():
    c = Cursor(16)
    assert [c.issue() for _ in range(3)] == [0, 1, 2]
    c.learned(0)
    c.learned(1)
    assert c.state() == {"data_position": 32, "learned_ahead": []}  # batch 2 is in flight: not recorded


def test_out_of_order_learning_and_resume_skip_nothing():
    c = Cursor(4)
    for _ in range(4):
        c.issue()
    c.learned(0)
    c.learned(2)  # batch 1 still in flight when the checkpoint is taken
    state = c.state()
    assert state == {"data_position": 4, "learned_ahead": [2]}
    r = Cursor.from_state(state, 4)
    assert [r.issue() for _ in range(3)] == [1, 3, 4]  # 1 again, 2 skipped (learned), then on


def test_a_lost_batch_is_made_again_first():
    c = Cursor(1)
    a, b = c.issue(), c.issue()
    c.give_back(a)  # its generator died
    assert c.issue() == a and c.issue() == 2
    c.learned(b)
    c.learned(a)
    assert c.state()["data_position"] == 2
