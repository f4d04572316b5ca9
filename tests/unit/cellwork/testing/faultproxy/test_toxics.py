"""The fault proxy's arithmetic: pacing, slicing and latency, on a clock passed in."""

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cellwork.testing.faultproxy.toxics import (
    Bandwidth,
    Latency,
    LimitData,
    Pacer,
    ResetPeer,
    Slicer,
    Timeout,
    latency_wait,
    slice_sizes,
)


@given(
    st.floats(1.0, 1e7),
    st.lists(st.tuples(st.floats(0, 2), st.integers(1, 200_000)), min_size=1, max_size=100),
)
def test_a_pacer_never_releases_more_than_its_rate_since_the_first_arrival(rate, chunks):
    pacer = Pacer(rate)
    now, first, released, last = 0.0, 0.0, 0, float("-inf")
    for gap, size in chunks:
        now += gap
        at = pacer.release_at(now, size)
        released += size
        assert at >= now + size / rate * (1 - 1e-9)  # a chunk takes its own time
        assert at >= last  # in order
        assert released <= rate * (at - first) * (1 + 1e-9)
        last = at


def test_a_pacer_saves_no_idle_time_for_a_burst():
    pacer = Pacer(1000.0)  # bytes/s
    assert pacer.release_at(0.0, 500) == pytest.approx(0.5)
    # Idle for 10 s, then two chunks at once: paced as if the link had just woken up.
    assert pacer.release_at(10.5, 1000) == pytest.approx(11.5)
    assert pacer.release_at(10.5, 1000) == pytest.approx(12.5)


def test_a_pacer_steps_a_large_chunk_in_tenths_of_a_second():
    assert Pacer(64_000.0).piece_size() == 6_400
    assert Pacer(0.5).piece_size() == 1  # never a piece of nothing


@given(
    st.integers(0, 300_000),
    st.integers(1, 5_000),
    st.data(),
    st.integers(0, 2**32),
)
def test_slices_add_up_to_the_chunk_and_stay_within_the_size_asked(size, average, data, seed):
    variation = data.draw(st.integers(0, average - 1))
    sizes = slice_sizes(size, average, variation, random.Random(seed))
    assert sum(sizes) == size
    assert all(1 <= s <= average + variation for s in sizes)


def test_a_chunk_within_the_average_is_not_cut():
    assert slice_sizes(90, 100, 0, random.Random(1)) == [90]
    assert slice_sizes(0, 100, 0, random.Random(1)) == []
    assert len(slice_sizes(10_000, 100, 0, random.Random(1))) == 128  # halved 7 times


@given(st.floats(0, 5_000), st.floats(0, 5_000), st.floats(0, 10), st.integers(0, 2**32))
def test_latency_waits_out_what_is_left_of_the_delay_since_arrival(latency, jitter, waited, seed):
    wait = latency_wait(Latency(latency, jitter), waited, random.Random(seed))
    assert 0.0 <= wait <= max(0.0, (latency + jitter) / 1000 - waited) + 1e-9
    if wait > 0:
        assert waited + wait >= (latency - jitter) / 1000 - 1e-9


def test_latency_without_jitter_is_exact():
    assert latency_wait(Latency(200), 0.05, random.Random(0)) == pytest.approx(0.15)
    assert latency_wait(Latency(200), 0.5, random.Random(0)) == 0.0


@pytest.mark.parametrize(
    "make",
    [
        lambda: Latency(-1),
        lambda: Latency(10, -1),
        lambda: Timeout(-1),
        lambda: ResetPeer(-1),
        lambda: Bandwidth(-1),
        lambda: Slicer(0),
        lambda: Slicer(10, 10),
        lambda: Slicer(10, 1, -1),
        lambda: LimitData(-1),
    ],
)
def test_toxics_refuse_values_outside_their_range(make):
    with pytest.raises(ValueError):
        make()
