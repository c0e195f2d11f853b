"""angos.log_throttle: one line per interval, and the next line counts what was held back."""

from angos.log_throttle import Throttled


def test_the_first_line_passes_then_lines_are_held_and_counted_until_the_interval_ends():
    t = Throttled(interval=3600)
    assert t.allow() == 0
    assert [t.allow() for _ in range(5)] == [None] * 5
    t._last -= 3600  # the interval has passed (backdated rather than slept through)
    assert t.allow() == 5
    assert t.allow() is None


def test_a_zero_interval_never_holds_a_line_back():
    t = Throttled(interval=0)
    assert [t.allow() for _ in range(3)] == [0, 0, 0]
