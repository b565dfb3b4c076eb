"""Tests for runner.engine.quota on a fake clock: no test depends on real time."""

from __future__ import annotations

import asyncio
import heapq
import itertools

import pytest

from runner.engine.quota import MAX_SERVER_WAIT_S, AdaptiveConcurrency, ExceedsTPM, QuotaLimiter, parse_reset_duration


class FakeClock:
    """Virtual time.  ``sleep`` parks the caller until ``advance`` moves the
    clock past its deadline; nothing ever waits on the real clock."""

    def __init__(self) -> None:
        self.t = 0.0
        self._sleepers: list[tuple[float, int, asyncio.Future]] = []
        self._seq = itertools.count()
        self.sleeps: list[float] = []

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        future = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self.t + seconds, next(self._seq), future))
        await future

    async def advance(self, seconds: float) -> None:
        """Move time forward, waking sleepers in deadline order."""
        target = self.t + seconds
        while self._sleepers and self._sleepers[0][0] <= target + 1e-12:
            deadline, _, future = heapq.heappop(self._sleepers)
            self.t = max(self.t, deadline)
            if not future.done():
                future.set_result(None)
            await settle()
        self.t = target
        await settle()


async def settle() -> None:
    """Let every runnable task run until it blocks again."""
    for _ in range(50):
        await asyncio.sleep(0)


async def released_after(clock: FakeClock, task: asyncio.Task, seconds: float, early: float) -> None:
    """`task` is still blocked `early` seconds of fake time before `seconds`, and done at `seconds`."""
    await settle()
    await clock.advance(seconds - early)
    assert not task.done()
    await clock.advance(early)
    assert task.done()


async def at_once(q: QuotaLimiter, tokens: int = 0, requests: int = 1) -> bool:
    """Whether `requests` acquires of `tokens` each go through now, without waiting (taking what they take);
    the first that would wait is cancelled, which takes nothing."""
    for _ in range(requests):
        task = asyncio.create_task(q.acquire(tokens))
        await settle()
        if not task.done():
            task.cancel()
            await settle()
            return False
    return True


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


# -- parse_reset_duration -----------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1s", 1.0),
        ("6m0s", 360.0),
        ("20ms", 0.02),
        ("1m30.5s", 90.5),
        ("2h0m0s", 7200.0),
        ("0s", 0.0),
        ("500us", 0.0005),
        ("0.5", 0.5),
        (" 7 ", 7.0),
    ],
)
def test_parse_reset_duration(text, seconds):
    assert parse_reset_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "abc", "1x", "s", "1s junk", "-1s", "-3", "nan", "inf"])
def test_parse_reset_duration_rejects(text):
    with pytest.raises(ValueError):
        parse_reset_duration(text)


# -- QuotaLimiter: RPM ----------------------------------------------------------


async def test_rpm_61st_request_waits_one_second(clock):
    q = QuotaLimiter(rpm=60, now=clock.now, sleep=clock.sleep, initial_fill=1.0)
    tasks = [asyncio.create_task(q.acquire()) for _ in range(61)]
    await settle()
    assert sum(t.done() for t in tasks) == 60
    assert not tasks[60].done()
    await clock.advance(0.999)
    assert not tasks[60].done()
    await clock.advance(0.001)
    assert tasks[60].done()
    assert clock.t == pytest.approx(1.0)
    assert q.waits == 1 and q.wait_s == pytest.approx(1.0)


async def test_default_start_is_a_modest_burst(clock):
    """A fresh limiter releases 10% of the minute at once, then the steady rate."""
    q = QuotaLimiter(rpm=60, now=clock.now, sleep=clock.sleep)
    tasks = [asyncio.create_task(q.acquire()) for _ in range(8)]
    await settle()
    assert [t.done() for t in tasks] == [True] * 6 + [False] * 2
    await clock.advance(1.0)
    assert [t.done() for t in tasks] == [True] * 7 + [False]
    await clock.advance(1.0)
    assert all(t.done() for t in tasks)


async def test_bucket_never_exceeds_capacity(clock):
    q = QuotaLimiter(rpm=60, now=clock.now, sleep=clock.sleep, initial_fill=1.0)
    await clock.advance(3600)
    assert await at_once(q, requests=60) and not await at_once(q)


# -- QuotaLimiter: TPM ----------------------------------------------------------


async def test_tpm_waits_for_tokens(clock):
    q = QuotaLimiter(tpm=600, now=clock.now, sleep=clock.sleep, initial_fill=1.0)  # 10 tokens/s
    await q.acquire(500)  # 100 left
    task = asyncio.create_task(q.acquire(200))  # needs 100 more: 10 s
    await released_after(clock, task, 10, early=0.1)
    assert not await at_once(q, tokens=1)


async def test_settle_refunds_and_charges(clock):
    q = QuotaLimiter(tpm=1000, now=clock.now, sleep=clock.sleep, initial_fill=1.0)
    await q.acquire(800)  # estimate: prompt + max output
    assert await at_once(q, tokens=200) and not await at_once(q, tokens=1)  # 200 were left
    q.settle(estimated=800, actual=300)  # refund 500
    assert await at_once(q, tokens=500) and not await at_once(q, tokens=1)
    q.settle(estimated=100, actual=400)  # charge 300 more: a debt, waited off at 1000/60 tokens a second
    await released_after(clock, asyncio.create_task(q.acquire(0)), 18, early=0.1)
    q.settle(estimated=10_000, actual=0)  # a refund cannot overfill the bucket
    assert await at_once(q, tokens=1000) and not await at_once(q, tokens=1)


async def test_settle_debt_is_waited_off(clock):
    q = QuotaLimiter(tpm=600, now=clock.now, sleep=clock.sleep, initial_fill=0.0)  # 10 tokens/s
    q.settle(estimated=0, actual=100)  # level -100
    task = asyncio.create_task(q.acquire(0))
    await released_after(clock, task, 10, early=0.1)


async def test_exceeds_tpm_raises_immediately(clock):
    q = QuotaLimiter(tpm=1000, now=clock.now, sleep=clock.sleep, initial_fill=0.0)
    with pytest.raises(ExceedsTPM) as info:
        await q.acquire(1001)
    assert (info.value.tokens, info.value.tpm) == (1001, 1000)
    assert clock.sleeps == []
    # Exactly the limit is allowed: it waits for a full bucket (60 s), not forever.
    task = asyncio.create_task(q.acquire(1000))
    await settle()
    await clock.advance(60)
    assert task.done() and task.exception() is None


async def test_fifo_big_request_not_starved(clock):
    q = QuotaLimiter(tpm=600, now=clock.now, sleep=clock.sleep, initial_fill=0.0)  # 10 tokens/s
    order: list[str] = []

    async def request(name: str, n: int) -> None:
        await q.acquire(n)
        order.append(name)

    big = asyncio.create_task(request("big", 600))
    await settle()
    small = [asyncio.create_task(request(f"small{i}", 10)) for i in range(3)]
    await settle()
    await clock.advance(5)  # 50 tokens: each small one would fit, but big is first
    assert order == []
    await clock.advance(55)
    assert order == ["big"]
    await clock.advance(3)
    assert order == ["big", "small0", "small1", "small2"]
    assert big.done() and all(t.done() for t in small)


async def test_cancelled_waiter_takes_nothing(clock):
    q = QuotaLimiter(rpm=60, now=clock.now, sleep=clock.sleep, initial_fill=0.0)
    await q.acquire()  # a fresh bucket always holds at least one request
    waiter = asyncio.create_task(q.acquire())
    await settle()
    waiter.cancel()
    await settle()
    assert waiter.cancelled()
    nxt = asyncio.create_task(q.acquire())  # the line is not stuck, and the waiter took no request
    await released_after(clock, nxt, 1, early=0.01)


async def test_no_limits_is_a_noop(clock):
    q = QuotaLimiter(now=clock.now, sleep=clock.sleep)
    for _ in range(1000):
        await q.acquire(10**9)
    assert clock.sleeps == []


# -- QuotaLimiter: headers -------------------------------------------------------


async def test_observe_headers_lowers_level(clock):
    q = QuotaLimiter(rpm=600, tpm=100_000, now=clock.now, sleep=clock.sleep, initial_fill=1.0)
    q.observe_headers(
        {
            "x-ratelimit-remaining-requests": "5",
            "x-ratelimit-remaining-tokens": "1234",
            "x-ratelimit-reset-requests": "100ms",
            "x-ratelimit-reset-tokens": "6m0s",
        }
    )
    # A higher remaining never raises our level.
    q.observe_headers({"x-ratelimit-remaining-requests": "500", "x-ratelimit-remaining-tokens": "99999"})
    assert await at_once(q, tokens=1234) and not await at_once(q, tokens=1)  # 4 requests left, no token
    assert await at_once(q, requests=4) and not await at_once(q)
    # Header names are case-insensitive; junk is ignored.
    q = QuotaLimiter(rpm=600, tpm=100_000, now=clock.now, sleep=clock.sleep, initial_fill=1.0)
    q.observe_headers({"X-RateLimit-Remaining-Requests": "0", "x-ratelimit-remaining-tokens": "lots"})
    assert not await at_once(q)
    task = asyncio.create_task(q.acquire(10))  # 600 rpm refills 1 request per 0.1 s
    await released_after(clock, task, 0.1, early=0.01)
    await clock.advance(0.1)
    assert await at_once(q, tokens=99_000)  # the tokens stayed


async def test_hint_only_waits_until_reset(clock):
    q = QuotaLimiter(now=clock.now, sleep=clock.sleep)
    q.observe_headers({"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "2.5s"})
    task = asyncio.create_task(q.acquire())
    await released_after(clock, task, 2.5, early=0.1)
    await q.acquire()  # reset passed: the hint is gone
    assert len(clock.sleeps) == 1


async def test_hint_only_counts_down_remaining(clock):
    q = QuotaLimiter(now=clock.now, sleep=clock.sleep)
    q.observe_headers({"x-ratelimit-remaining-requests": "2", "x-ratelimit-reset-requests": "1s"})
    await q.acquire()
    await q.acquire()
    task = asyncio.create_task(q.acquire())
    await settle()
    assert not task.done()
    await clock.advance(1)
    assert task.done()


async def test_hint_tokens_with_rpm_configured(clock):
    """rpm given, tpm not: the token dimension follows the server's hint."""
    q = QuotaLimiter(rpm=6000, now=clock.now, sleep=clock.sleep, initial_fill=1.0)
    q.observe_headers({"x-ratelimit-remaining-tokens": "100", "x-ratelimit-reset-tokens": "6m0s"})
    await q.acquire(50)
    task = asyncio.create_task(q.acquire(60))  # 50 left < 60
    # the server said 6m; every server-given wait is capped at 120 s
    await released_after(clock, task, 120, early=1)


async def test_an_absurd_reset_header_cannot_freeze_the_run(clock):
    q = QuotaLimiter(now=clock.now, sleep=clock.sleep)
    q.observe_headers({"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "1000h"})
    task = asyncio.create_task(q.acquire())
    await settle()
    await clock.advance(MAX_SERVER_WAIT_S)
    assert task.done()


async def test_hint_without_reset_uses_default(clock):
    q = QuotaLimiter(now=clock.now, sleep=clock.sleep)
    q.observe_headers({"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "soon"})
    task = asyncio.create_task(q.acquire())
    await released_after(clock, task, 1, early=0.01)


# -- AdaptiveConcurrency ----------------------------------------------------------


def make(clock: FakeClock, max_c: int, min_c: int = 1, **kw) -> AdaptiveConcurrency:
    return AdaptiveConcurrency(max_c, min_c, now=clock.now, sleep=clock.sleep, **kw)


async def test_starts_at_max_like_a_semaphore(clock):
    a = make(clock, 4)
    assert a.limit == 4
    for _ in range(4):
        await a.acquire()
    assert a.in_flight == 4
    blocked = asyncio.create_task(a.acquire())
    await settle()
    assert not blocked.done()
    a.release()
    await settle()
    assert blocked.done() and a.in_flight == 4


async def test_decrease_halves_once_per_window_by_send_time(clock):
    a = make(clock, 16)
    await clock.advance(1)
    assert a.on_throttle(sent_at=0.5) is True
    assert a.limit == 8
    # Sent before the decrease at t=1: says nothing about the new limit.
    assert a.on_throttle(sent_at=0.9) is False
    assert a.limit == 8
    await clock.advance(1)
    assert a.on_throttle(sent_at=1.5) is True
    assert a.limit == 4
    assert (a.throttles, a.decreases, a.min_limit_seen) == (3, 2, 4)


async def test_decrease_window_without_send_time(clock):
    a = make(clock, 16)
    await clock.advance(10)
    assert a.on_throttle() is True  # 8, window until t=11
    await clock.advance(0.5)
    assert a.on_throttle() is False
    await clock.advance(0.5)
    assert a.on_throttle(retry_after=5) is True  # 4, window until t=16
    await clock.advance(4.9)
    assert a.on_throttle() is False
    await clock.advance(0.1)
    assert a.on_throttle() is True
    assert a.limit == 2


async def test_additive_increase_about_one_per_round_trip(clock):
    a = make(clock, 10)
    a.on_throttle()
    assert a.limit == 5
    for _ in range(5):
        a.on_success()
    assert a.limit == 5  # 5 + 1/5 + 1/5.2 + ... = 5.93
    a.on_success()
    assert a.limit == 6  # 6.10


async def test_increase_capped_at_max(clock):
    a = make(clock, 8)
    for _ in range(1000):
        a.on_success()
    assert a.limit == 8
    a.on_throttle()
    for _ in range(1000):
        a.on_success()
    assert a.limit == 8


async def test_never_below_min(clock):
    a = make(clock, 8, min_c=2)
    for _ in range(10):
        a.on_throttle()
        await clock.advance(2)
    assert a.limit == 2
    assert a.min_limit_seen == 2


async def test_global_pause_blocks_acquires(clock):
    a = make(clock, 8)
    await a.acquire()
    a.on_throttle(retry_after=3)  # limit 4, pause until t=3
    assert a.paused_until == pytest.approx(3)
    first = asyncio.create_task(a.acquire())
    second = asyncio.create_task(a.acquire())
    await settle()
    await clock.advance(2.9)
    assert not first.done() and not second.done()
    await clock.advance(0.1)
    assert first.done() and second.done()
    assert a.in_flight == 3


async def test_pause_is_capped(clock):
    a = make(clock, 4, max_pause=10)
    a.on_throttle(retry_after=3600)
    assert a.paused_until == pytest.approx(10)


async def test_in_flight_never_exceeds_limit(clock):
    a = make(clock, 3)
    granted: list[int] = []
    over: list[tuple[int, int]] = []
    gates = [asyncio.Event() for _ in range(10)]

    async def worker(i: int) -> None:
        async with a.slot():
            if a.in_flight > a.limit:
                over.append((a.in_flight, a.limit))
            granted.append(i)
            await gates[i].wait()

    tasks = [asyncio.create_task(worker(i)) for i in range(10)]
    await settle()
    assert granted == [0, 1, 2] and a.in_flight == 3
    a.on_throttle()  # 3 -> 1.5 -> limit 1; the three in flight keep running
    assert a.limit == 1
    gates[0].set()
    gates[1].set()
    await settle()
    assert granted == [0, 1, 2] and a.in_flight == 1  # nothing new while 1 >= 1
    gates[2].set()
    await settle()
    assert granted == [0, 1, 2, 3] and a.in_flight == 1
    for gate in gates:
        gate.set()
    await asyncio.gather(*tasks)
    assert granted == list(range(10))  # FIFO
    assert over == [] and a.in_flight == 0


async def test_increase_wakes_waiters(clock):
    a = make(clock, 4)
    a.on_throttle()
    assert a.limit == 2
    await a.acquire()
    await a.acquire()
    waiter = asyncio.create_task(a.acquire())
    await settle()
    assert not waiter.done()
    for _ in range(2):  # 2 -> 2.5 -> 2.9: still 2
        a.on_success()
    await settle()
    assert not waiter.done()
    a.on_success()  # 3.24: a third slot opens without any release
    await settle()
    assert waiter.done() and a.in_flight == 3


async def test_cancelled_waiter_leaves_the_line(clock):
    a = make(clock, 1)
    await a.acquire()
    first = asyncio.create_task(a.acquire())
    second = asyncio.create_task(a.acquire())
    await settle()
    first.cancel()
    await settle()
    a.release()
    await settle()
    assert first.cancelled() and second.done() and a.in_flight == 1


async def test_slot_releases_on_error(clock):
    a = make(clock, 2)
    with pytest.raises(RuntimeError, match="boom"):
        async with a.slot():
            raise RuntimeError("boom")
    assert a.in_flight == 0
    async with a:
        assert a.in_flight == 1
    assert a.in_flight == 0
    with pytest.raises(RuntimeError):
        a.release()


async def test_not_adaptive_is_a_fixed_semaphore(clock):
    a = make(clock, 4, adaptive=False)
    assert a.on_throttle(retry_after=5) is False
    a.on_success()
    assert a.limit == 4 and a.throttles == 1 and a.decreases == 0
    for _ in range(4):
        await a.acquire()  # no pause either
    assert clock.sleeps == []


async def test_burst_of_one_second_paces_from_the_first_request(clock):
    """rpm=600 with a 1 s burst: the first goes at once, then one every 0.1 s; after an idle second, a burst."""
    q = QuotaLimiter(rpm=600, now=clock.now, sleep=clock.sleep, burst_s=1.0)
    await clock.advance(5.0)  # time before the first request (start-up) fills nothing
    await q.acquire()
    task = asyncio.create_task(q.acquire())
    await released_after(clock, task, 0.1, early=0.01)
    await clock.advance(1.0)  # idle: the bucket fills to its one second's worth, which may go at once
    tasks = [asyncio.create_task(q.acquire()) for _ in range(11)]
    await settle()
    assert sum(t.done() for t in tasks) == 10


class FixedWindowServer:
    """A server that admits `limit` requests per fixed one-second window of its clock, whose windows
    start `phase` seconds into the client's: a model of a gateway's per-second enforcement."""

    def __init__(self, clock: FakeClock, limit: int, phase: float) -> None:
        self.clock, self.limit, self.phase = clock, limit, phase
        self.seen: dict[int, int] = {}
        self.refused = 0

    def admit(self) -> bool:
        window = int((self.clock.now() + self.phase) // 1)
        self.seen[window] = self.seen.get(window, 0) + 1
        if self.seen[window] > self.limit:
            self.refused += 1
            return False
        return True


@pytest.mark.parametrize("phase", [0.0, 0.05, 0.5, 0.95])
async def test_rpm_against_fixed_one_second_windows_is_almost_never_refused(clock, phase):
    # --rpm 600 against a server enforcing 10 a second in fixed windows, 120 requests queued at once:
    # a bucket that started full sent 10 at once and 9 more refills in the same window.
    q = QuotaLimiter(rpm=600, now=clock.now, sleep=clock.sleep, burst_s=1.0)
    server = FixedWindowServer(clock, 10, phase)
    await clock.advance(3.0)  # start-up
    left = list(range(120))

    async def send() -> None:
        while left:
            left.pop()
            await q.acquire()
            while not server.admit():  # a 429: retried, the limiter slows down
                q.throttled()
                await q.acquire()
            q.succeeded()

    tasks = [asyncio.create_task(send()) for _ in range(16)]
    for _ in range(60_000):  # 10 minutes of fake time: ample, however slow the 429s made the limiter
        if all(t.done() for t in tasks):
            break
        await clock.advance(0.01)
    assert all(t.done() for t in tasks)
    assert server.refused <= 3, f"{server.refused} refused; per window: {server.seen}"


async def test_a_request_larger_than_the_burst_waits_for_a_full_bucket_not_forever(clock):
    q = QuotaLimiter(tpm=600, now=clock.now, sleep=clock.sleep, burst_s=1.0)  # 10 tokens/s, bucket of 10
    await q.acquire(10)
    task = asyncio.create_task(q.acquire(50))  # five seconds' worth
    await settle()
    await clock.advance(1.0)
    assert task.done()  # it went on a full bucket and left a debt
    follower = asyncio.create_task(q.acquire(1))
    await released_after(clock, follower, 4.2, early=0.2)  # the debt of 40 tokens is paid first


async def test_429s_under_a_configured_limit_lower_the_rate_and_successes_recover_it(clock):
    q = QuotaLimiter(rpm=600, now=clock.now, sleep=clock.sleep, burst_s=1.0)
    base = q._requests.rate
    for _ in range(20):
        q.throttled()
    assert q.throttles == 20 and q._requests.rate == pytest.approx(base * QuotaLimiter.MIN_RATE_SHARE)
    for _ in range(500):
        q.succeeded()
    assert base * 0.99 < q._requests.rate <= base
