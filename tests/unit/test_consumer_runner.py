"""The runner's pure parts: which offsets a batch commits, how long it backs off."""

from __future__ import annotations

from itertools import islice

from consumers.common.runner import backoff_delays, commit_positions


def test_commit_position_is_one_past_the_highest_offset_per_partition() -> None:
    assert commit_positions([("t", 0, 5), ("t", 1, 7), ("t", 0, 9), ("t", 0, 6),
                             ("u", 0, 0)]) == {("t", 0): 10, ("t", 1): 8, ("u", 0): 1}


def test_nothing_handled_commits_nothing() -> None:
    assert commit_positions([]) == {}


def test_backoff_doubles_up_to_the_maximum() -> None:
    assert list(islice(backoff_delays(0.5, 3.0), 6)) == [0.5, 1.0, 2.0, 3.0, 3.0, 3.0]
