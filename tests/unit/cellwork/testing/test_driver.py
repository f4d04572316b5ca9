"""The open-loop driver: requests leave on schedule whatever the answers do, each one
is recorded, and a client that fell behind says so."""

import asyncio
import time

from cellwork.testing.driver import Answer, OpenLoopDriver, drive_during


async def test_every_due_request_is_sent_and_recorded_whatever_the_answers_do() -> None:
    async def slow_or_failing(index: int) -> Answer:
        if index % 3 == 0:
            await asyncio.sleep(0.3)  # slower than the schedule: the next ones still leave
            return Answer("read", 503, key=str(index))
        return Answer("read", 200, key=str(index))

    driver = OpenLoopDriver(100, 0.5, slow_or_failing)
    drive = await driver.run()
    assert len(drive.records) == 50
    assert sorted(r.index for r in drive.records) == list(range(50))
    failed = drive.failed("read", (200,))
    assert {r.index for r in failed} == set(range(0, 50, 3))
    assert all(r.latency >= 0.3 for r in failed)
    assert not drive.behind
    assert drive.summary()["read"]["503"] == len(failed)


async def test_a_request_that_raises_is_recorded_with_its_error_kind() -> None:
    async def broken(index: int) -> Answer:
        raise ConnectionResetError("peer gone")

    drive = await OpenLoopDriver(50, 0.1, broken).run()
    assert drive.records and all(r.error == "ConnectionResetError" for r in drive.records)


async def test_windows_select_requests_by_when_they_were_due() -> None:
    async def fault(driver: OpenLoopDriver) -> None:
        await asyncio.sleep(0.2)
        driver.mark("fault")

    async def answer(index: int) -> Answer:
        return Answer("read", 200)

    driver = OpenLoopDriver(100, 0.4, answer)
    drive = await drive_during(driver, fault)
    at = drive.marks["fault"]
    before, after = drive.of("read", before=at), drive.of("read", after=at)
    assert before and after and len(before) + len(after) == len(drive.records)
    assert all(r.scheduled < at for r in before)


async def test_a_client_that_cannot_keep_its_schedule_makes_the_run_inconclusive() -> None:
    async def blocks_the_loop(index: int) -> Answer:
        time.sleep(0.05)  # noqa: ASYNC251 - a client too slow for its schedule, on purpose
        return Answer("read", 200)

    drive = await OpenLoopDriver(100, 0.5, blocks_the_loop).run()
    assert drive.behind
    assert drive.lag_p99 > 0.25


async def test_the_in_flight_bound_drops_and_says_so() -> None:
    release = asyncio.Event()

    async def hangs(index: int) -> Answer:
        await release.wait()
        return Answer("read", 200)

    driver = OpenLoopDriver(200, 0.2, hangs, max_in_flight=5)

    async def open_later(_: OpenLoopDriver) -> None:
        await asyncio.sleep(0.3)
        release.set()

    drive = await drive_during(driver, open_later)
    assert len(drive.records) == 5
    assert drive.dropped == 40 - 5
    assert not drive.behind  # the answers were late, not the client
