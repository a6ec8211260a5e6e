"""Dispatch: oldest first, bounded in flight, failed entries retried later with backoff."""

from __future__ import annotations

from producer.dispatch import Dispatcher


def drain(dispatcher: Dispatcher[str], now: float) -> list[str]:
    sent = []
    while (entry := dispatcher.next_to_send(now)) is not None:
        dispatcher.sent(entry)
        sent.append(entry)
    return sent


def test_entries_go_oldest_first_within_the_in_flight_byte_bound() -> None:
    dispatcher: Dispatcher[str] = Dispatcher(retry_interval=1, max_in_flight_bytes=100)
    for name in "abcd":
        dispatcher.add(name, 40)
    assert drain(dispatcher, 0) == ["a", "b"]
    dispatcher.acked("a")
    assert drain(dispatcher, 0) == ["c"]
    assert dispatcher.in_flight == 2 and dispatcher.ready == 1


def test_an_entry_larger_than_the_bound_still_goes_alone() -> None:
    dispatcher: Dispatcher[str] = Dispatcher(retry_interval=1, max_in_flight_bytes=100)
    dispatcher.add("huge", 500)
    dispatcher.add("small", 1)
    assert drain(dispatcher, 0) == ["huge"]
    dispatcher.acked("huge")
    assert drain(dispatcher, 0) == ["small"]


def test_message_count_bound() -> None:
    dispatcher: Dispatcher[str] = Dispatcher(retry_interval=1, max_in_flight_messages=2)
    for name in "abc":
        dispatcher.add(name, 1)
    assert drain(dispatcher, 0) == ["a", "b"]


def test_failed_entry_waits_with_doubling_delay_then_goes_before_newer_ones() -> None:
    dispatcher: Dispatcher[str] = Dispatcher(retry_interval=10, max_retry_delay=25)
    dispatcher.add("a", 1)
    assert drain(dispatcher, 0) == ["a"]
    assert dispatcher.failed("a", now=0) == 10
    dispatcher.add("b", 1)
    assert drain(dispatcher, 5) == ["b"]
    assert dispatcher.next_wakeup() == 10
    assert drain(dispatcher, 10) == ["a"]
    assert dispatcher.failed("a", now=10) == 20
    assert dispatcher.failed("b", now=10) == 10
    assert dispatcher.waiting == 2
    assert drain(dispatcher, 30) == ["b", "a"], "retries go in the order they fell due"
    assert dispatcher.failed("a", now=30) == 25, "capped"


def test_unsent_entry_is_next_again() -> None:
    dispatcher: Dispatcher[str] = Dispatcher(retry_interval=1)
    dispatcher.add("a", 1)
    dispatcher.add("b", 1)
    entry = dispatcher.next_to_send(0)
    assert entry == "a"
    dispatcher.unsent(entry)
    assert drain(dispatcher, 0) == ["a", "b"]


def test_requeued_in_flight_entries_go_first_and_free_the_bound() -> None:
    dispatcher: Dispatcher[str] = Dispatcher(retry_interval=1, max_in_flight_bytes=2)
    for name in "abc":
        dispatcher.add(name, 1)
    assert drain(dispatcher, 0) == ["a", "b"]
    dispatcher.requeue_in_flight()
    assert dispatcher.in_flight == 0
    assert drain(dispatcher, 0) == ["a", "b"]


def test_acked_entry_is_forgotten_and_a_late_ack_is_harmless() -> None:
    dispatcher: Dispatcher[str] = Dispatcher(retry_interval=1)
    dispatcher.add("a", 1)
    drain(dispatcher, 0)
    dispatcher.acked("a")
    dispatcher.acked("a")
    assert (dispatcher.in_flight, dispatcher.ready, dispatcher.waiting) == (0, 0, 0)
