"""Pending jobs: read at once, re-checked with backoff while incomplete, given up at the bound."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from producer.tracker import PendingJobs


def test_touched_jobs_are_due_at_once_oldest_first_and_stay_due_until_reported() -> None:
    jobs: PendingJobs[str] = PendingJobs(ready_timeout=30)
    assert jobs.touch("a") and jobs.touch("b")
    assert not jobs.touch("a"), "a second touch is not a new detection"
    assert jobs.due(now=0) == ["a", "b"]
    assert jobs.due(now=0, limit=1) == ["a"]
    jobs.done("a")
    assert jobs.due(now=0) == ["b"]
    assert len(jobs) == 1


def test_incomplete_job_is_rechecked_on_a_backing_off_timer_without_a_touch() -> None:
    jobs: PendingJobs[str] = PendingJobs(ready_timeout=30, first_retry=0.05, max_retry=1.0)
    jobs.touch("a")
    assert jobs.incomplete("a", now=10.0)
    assert jobs.due(now=10.0) == []
    assert jobs.next_wakeup() == 10.05
    assert jobs.due(now=10.05) == ["a"]
    assert jobs.incomplete("a", now=10.05)
    assert jobs.next_wakeup() == 10.15, "the delay doubles"
    for _ in range(10):
        at = jobs.next_wakeup()
        assert at is not None
        jobs.due(now=at)
        jobs.incomplete("a", now=at)
    at = jobs.next_wakeup()
    assert at is not None
    assert jobs.due(now=at - 1.0 - 1e-9) == [], "the delay is capped at max_retry"


def test_a_touch_makes_an_incomplete_job_due_before_its_timer() -> None:
    jobs: PendingJobs[str] = PendingJobs(ready_timeout=30)
    jobs.touch("a")
    jobs.incomplete("a", now=0.0)
    jobs.touch("a")  # the close-write of its last file
    assert jobs.due(now=0.0) == ["a"]
    assert jobs.next_wakeup() == 0.0


def test_job_incomplete_for_ready_timeout_is_given_up_with_a_last_check_at_the_deadline() -> None:
    jobs: PendingJobs[str] = PendingJobs(ready_timeout=2.0, max_retry=5.0)
    jobs.touch("a")
    assert jobs.incomplete("a", now=100.0)
    now = 100.0
    while True:
        at = jobs.next_wakeup()
        assert at is not None and at <= 102.0, "no check is scheduled past the deadline"
        now = at
        assert jobs.due(now) == ["a"]
        if not jobs.incomplete("a", now):
            break
    assert now == 102.0
    jobs.done("a")
    assert len(jobs) == 0 and jobs.next_wakeup() is None


def test_done_job_leaves_no_timer_behind() -> None:
    jobs: PendingJobs[str] = PendingJobs(ready_timeout=30)
    jobs.touch("a")
    jobs.incomplete("a", now=0.0)
    jobs.done("a")
    assert jobs.next_wakeup() is None
    assert jobs.due(now=100.0) == []


@given(st.lists(st.tuples(st.sampled_from("abcd"), st.sampled_from(["touch", "incomplete",
                                                                     "done"])), max_size=60))
def test_every_pending_job_is_either_due_or_has_a_timer(steps: list[tuple[str, str]]) -> None:
    """Whatever happens, no pending job is forgotten: it is due now or at its next wakeup."""
    jobs: PendingJobs[str] = PendingJobs(ready_timeout=1000)
    now = 0.0
    for job, action in steps:
        now += 0.01
        if action == "touch":
            jobs.touch(job)
        elif job in jobs and action == "incomplete" and job in jobs.due(now):
            jobs.incomplete(job, now)
        elif action == "done":
            jobs.done(job)
    pending = set(jobs.jobs())
    found: set[str] = set()
    for _ in range(200):
        at = jobs.next_wakeup()
        if at is None:
            break
        now = max(now, at)
        for job in jobs.due(now):
            found.add(job)
            jobs.done(job)
    assert found == pending
    assert len(jobs) == 0


def test_a_job_handed_to_a_reader_is_not_due_until_its_answer() -> None:
    jobs: PendingJobs[str] = PendingJobs(ready_timeout=30)
    jobs.touch("a")
    jobs.reading("a")
    assert jobs.is_reading("a")
    assert jobs.due(now=0) == [] and jobs.next_wakeup() is None
    assert "a" in jobs, "still pending while it is read"
    jobs.done("a")
    assert not jobs.is_reading("a") and len(jobs) == 0


def test_a_touch_during_a_read_that_finds_the_job_incomplete_makes_it_due_at_once() -> None:
    jobs: PendingJobs[str] = PendingJobs(ready_timeout=30, first_retry=0.05)
    jobs.touch("a")
    jobs.reading("a")
    assert not jobs.touch("a"), "a touch of a job being read is no new detection"
    assert jobs.due(now=0) == [], "not read twice at once"
    assert jobs.incomplete("a", now=1.0)
    assert jobs.due(now=1.0) == ["a"], "the touch may have completed it: no backoff"


def test_an_incomplete_answer_without_a_touch_backs_off() -> None:
    jobs: PendingJobs[str] = PendingJobs(ready_timeout=30, first_retry=0.05)
    jobs.touch("a")
    jobs.reading("a")
    assert jobs.incomplete("a", now=1.0)
    assert jobs.due(now=1.0) == [] and jobs.next_wakeup() == 1.05


def test_a_read_that_could_not_be_kept_is_due_again_at_once() -> None:
    jobs: PendingJobs[str] = PendingJobs(ready_timeout=30)
    jobs.touch("a")
    jobs.touch("b")
    jobs.reading("a")
    jobs.again("a")
    assert not jobs.is_reading("a")
    assert set(jobs.due(now=0)) == {"a", "b"}


def test_a_job_touched_while_read_still_times_out_at_the_ready_timeout() -> None:
    jobs: PendingJobs[str] = PendingJobs(ready_timeout=5)
    jobs.touch("a")
    jobs.reading("a")
    assert jobs.incomplete("a", now=0.0)
    jobs.reading("a")
    jobs.touch("a")
    assert not jobs.incomplete("a", now=5.0), "given up at the bound despite the touch"
