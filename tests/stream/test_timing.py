"""runner.stream.timing.Timing: the stamps one attempt takes (sent, first event, first text, gaps, end).

Stamps are given as numbers, so nothing here reads a clock.  (The metrics
derived from them are runner.record.Metrics.from_timing.)
"""

from __future__ import annotations

from datetime import UTC

from runner.stream.timing import Timing


def test_first_event_is_not_first_text():
    t = Timing(due=1.0)
    t.mark_sent(2.0)
    t.on_event(2.5, carried_text=False)  # the role-only chunk: TTFB, not TTFT
    assert (t.first_event, t.first_text, t.last_text) == (2.5, None, None)
    t.on_event(3.0, carried_text=True)
    assert (t.first_event, t.first_text, t.last_text) == (2.5, 3.0, 3.0)
    assert t.itl == []  # one text event: no gap yet


def test_itl_is_the_gaps_between_text_events_only():
    t = Timing(due=0.0)
    t.mark_sent(0.0)
    for arrived, text in ((1.0, True), (1.25, True), (1.5, False), (2.0, True), (2.0, True), (2.5, False)):
        t.on_event(arrived, text)
    # the event without text at 1.5 neither ends nor starts a gap; two events in one read give a 0 gap
    assert t.itl == [0.25, 0.75, 0.0]
    assert (t.first_event, t.first_text, t.last_text) == (1.0, 1.0, 2.0)


def test_mark_sent_stamps_the_wall_clock_start_in_utc():
    t = Timing(due=5.0)
    assert t.sent == 0.0 and t.started_at is None  # not sent: no metrics will be derived
    t.mark_sent(7.0)
    assert t.sent == 7.0 and t.started_at.tzinfo == UTC


def test_a_retry_starts_from_fresh_stamps():
    first = Timing(due=0.0)
    first.mark_sent(0.0)
    first.on_event(1.0, True)
    second = Timing(due=0.0)  # each attempt gets its own Timing: the ITL list is not shared
    second.mark_sent(2.0)
    second.on_event(2.5, True)
    second.on_event(2.75, True)
    assert first.itl == [] and second.itl == [0.25]


def test_on_read_stamps_as_on_event_does_for_each_event_of_the_read():
    reads = [(1.0, 2, 0), (1.5, 3, 2), (1.5, 0, 0), (2.0, 1, 1), (3.0, 4, 3), (3.5, 1, 0)]  # (arrived, events, text)
    one, each = Timing(due=0.0), Timing(due=0.0)
    for arrived, events, text in reads:
        one.on_read(arrived, events, text)
        for k in range(events):
            each.on_event(arrived, k < text)
    assert (one.first_event, one.first_text, one.last_text, one.itl) == \
           (each.first_event, each.first_text, each.last_text, each.itl) == (1.0, 1.5, 3.0, [0.0, 0.5, 1.0, 0.0, 0.0])
