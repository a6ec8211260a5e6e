"""The runner's pure parts: which offsets a batch commits, how long it backs off, what a
batch takes."""

from __future__ import annotations

from itertools import islice

from consumers.common.runner import commit_positions, take_batch
from runtime.backoff import backoff_delays


def test_commit_position_is_one_past_the_highest_offset_per_partition() -> None:
    assert commit_positions([("t", 0, 5), ("t", 1, 7), ("t", 0, 9), ("t", 0, 6),
                             ("u", 0, 0)]) == {("t", 0): 10, ("t", 1): 8, ("u", 0): 1}


def test_nothing_handled_commits_nothing() -> None:
    assert commit_positions([]) == {}


def test_backoff_doubles_up_to_the_maximum() -> None:
    assert list(islice(backoff_delays(0.5, 3.0), 6)) == [0.5, 1.0, 2.0, 3.0, 3.0, 3.0]


class ScriptedConsume:
    """consume(num_messages, timeout) over a fixed list of already fetched messages;
    records every call."""

    def __init__(self, fetched: list[str]) -> None:
        self.fetched = fetched
        self.calls: list[tuple[int, float]] = []

    def __call__(self, num_messages: int, timeout: float) -> list[str]:
        self.calls.append((num_messages, timeout))
        taken, self.fetched = self.fetched[:num_messages], self.fetched[num_messages:]
        return taken


def test_a_batch_is_what_has_arrived_without_waiting_for_it_to_fill() -> None:
    consume = ScriptedConsume(["m1", "m2"])
    assert take_batch(consume, 500, 0.5) == ["m1", "m2"]  # type: ignore[arg-type] -- strings stand in for messages
    # Only the first message is waited for; the rest is taken as fetched (timeout 0).
    assert consume.calls == [(1, 0.5), (499, 0)]


def test_a_backlog_still_comes_in_full_batches() -> None:
    consume = ScriptedConsume([f"m{i}" for i in range(1200)])
    sizes = [len(take_batch(consume, 500, 0.5)) for _ in range(3)]  # type: ignore[arg-type] -- strings stand in for messages
    assert sizes == [500, 500, 200]


def test_nothing_arrived_waits_once_and_takes_nothing() -> None:
    consume = ScriptedConsume([])
    assert take_batch(consume, 500, 0.5) == []  # type: ignore[arg-type] -- strings stand in for messages
    assert consume.calls == [(1, 0.5)]


def test_a_batch_of_one_never_asks_for_zero_messages() -> None:
    consume = ScriptedConsume(["m1", "m2"])
    assert take_batch(consume, 1, 0.5) == ["m1"]  # type: ignore[arg-type] -- strings stand in for messages
    assert consume.calls == [(1, 0.5)]
