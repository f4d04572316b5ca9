"""Event-loop lag: the smoothing stays within what was measured and follows it, the
shedding ramp goes from none to all between one and two thresholds, and the sampler on a
real loop sees the loop held up, then stops once nothing arrives."""

import asyncio
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cellwork.resilience.loop_lag import LagSampler, LoopLag, loop_lag, shed_share
from tests.waiting import wait_until


@given(st.lists(st.floats(-1, 10), max_size=200), st.floats(0.01, 1))
def test_the_smoothed_lag_stays_between_zero_and_the_latest_lateness_seen(lates, smoothing):
    lag = LoopLag(smoothing)
    for late in lates:
        lag.observe(late)
        assert 0.0 <= lag.seconds <= max(0.0, *lates) + 1e-9


def test_a_held_lateness_is_followed_and_a_single_pause_fades():
    lag = LoopLag()
    for _ in range(6):
        lag.observe(0.3)
    assert lag.seconds >= 0.9 * 0.3
    for _ in range(6):
        lag.observe(0.0)
    assert lag.seconds <= 0.1 * 0.3
    pause = LoopLag()
    pause.observe(0.1)  # one GC pause: a third of it
    assert pause.seconds == pytest.approx(0.1 / 3)


@given(st.floats(0, 10), st.floats(1e-3, 1))
def test_the_share_refused_ramps_from_none_at_the_threshold_to_all_at_twice_it(lag, max_lag):
    share = shed_share(lag, max_lag)
    assert 0.0 <= share <= 1.0
    if lag <= max_lag:
        assert share == 0.0
    if lag >= 2 * max_lag:
        assert share == 1.0
    assert shed_share(lag + 0.01, max_lag) >= share


def burn(seconds: float) -> None:
    """Hold the loop as a CPU-bound handler does."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


@given(st.floats(0, 1), st.floats(0, 100), st.floats(0.01, 1))
def test_a_quiet_spell_counts_as_that_many_punctual_probes(seconds, probes, smoothing):
    quiet, probed = LoopLag(smoothing), LoopLag(smoothing)
    quiet.seconds = probed.seconds = seconds
    quiet.quiet(probes)
    for _ in range(int(probes)):
        probed.observe(0.0)
    assert 0.0 <= quiet.seconds <= probed.seconds + 1e-12  # a part-interval decays too
    assert quiet.seconds <= seconds


async def test_the_sampler_sees_the_loop_held_up_and_stops_when_nothing_arrives():
    sampler = LagSampler(every=0.01)

    def busy_and_lagging() -> bool:
        sampler.touch()  # work keeps arriving
        return sampler.seconds > 0.05

    try:
        sampler.touch()
        burn(0.5)  # the probe, due in 10 ms, runs ~490 ms late
        await wait_until(busy_and_lagging, "the lag to show")
        # Nothing touches it now: a tick with nothing new lets it stop.
        await wait_until(lambda: sampler._handle is None, "the probe to stop")
        sampler.touch()  # work again: it starts again
        assert sampler._handle is not None
    finally:
        sampler.stop()


async def test_a_loop_has_one_sampler():
    assert loop_lag() is loop_lag()
    assert await asyncio.to_thread(lambda: asyncio.run(_sampler_id())) != id(loop_lag())


async def _sampler_id() -> int:
    return id(loop_lag())


def test_settings_out_of_range_are_refused():
    with pytest.raises(ValueError):
        LoopLag(0.0)
    with pytest.raises(ValueError):
        LagSampler(every=0.0)


async def test_a_quiet_samplers_reading_decays_instead_of_holding_the_last_busy_value():
    sampler = LagSampler(every=0.01)
    sampler.touch()
    sampler.lag.observe(0.3)  # as if the last probe of a busy spell ran 300 ms late
    busy = sampler.seconds
    await wait_until(lambda: sampler._handle is None, "the probe stopped once idle", every=0.01)
    await wait_until(lambda: sampler.seconds < busy / 10, "the reading decayed", every=0.01)
