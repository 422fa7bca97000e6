"""`up`'s restart policy: a worker that exits is started again, unless it keeps exiting."""

from __future__ import annotations

from streams.runtime.supervisor import RestartPolicy


def test_a_worker_that_exits_now_and_then_is_always_started_again() -> None:
    now = [0.0]
    policy = RestartPolicy(limit=3, window=60.0, clock=lambda: now[0])
    for _ in range(10):
        assert policy.allow(0)
        now[0] += 31.0  # never three exits within a minute


def test_a_crash_loop_stops_at_the_limit_and_counts_each_worker_apart() -> None:
    now = [0.0]
    policy = RestartPolicy(limit=3, window=60.0, clock=lambda: now[0])
    assert policy.allow(0) and policy.allow(0)
    assert policy.allow(1)  # another worker's exits are its own
    now[0] = 59.0
    assert not policy.allow(0)  # the third exit of worker 0 within 60 s


def test_exits_older_than_the_window_no_longer_count() -> None:
    now = [0.0]
    policy = RestartPolicy(limit=3, window=60.0, clock=lambda: now[0])
    assert policy.allow(0) and policy.allow(0)
    now[0] = 60.0  # both are a full window old
    assert policy.allow(0) and policy.allow(0)
    assert not policy.allow(0)
