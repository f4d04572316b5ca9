"""The fault layer: nothing unless asked, then exactly the faults asked for, counted."""

from __future__ import annotations

import itertools
from typing import Any

import grpc
import pytest
from hypothesis import given
from hypothesis import strategies as st
from structlog.testing import capture_logs

from cellwork.errors import Internal, Unavailable
from cellwork.rpc.faults import NO_FAULTS, FaultLayer, Faults, faults_injected


async def handler(request: Any, context: Any) -> str:
    return f"answered {request}"


class Recorder:
    """Where a layer sleeps and burns, recorded instead of waited."""

    def __init__(self) -> None:
        self.slept: list[float] = []
        self.burnt: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)

    def burn(self, seconds: float) -> None:
        self.burnt.append(seconds)


def layer(service: str, draws: list[float] | None = None) -> tuple[FaultLayer, Recorder]:
    recorder = Recorder()
    rng = itertools.cycle(draws or [0.5]).__next__
    return FaultLayer(service, rng=rng, sleep=recorder.sleep, burn=recorder.burn), recorder


def injected(service: str, kind: str) -> float:
    return faults_injected().labels(service, kind)._value.get()


async def test_without_faults_the_layer_hands_back_the_handlers_own_call():
    faults, recorder = layer("quiet")
    wrapped = faults(handler)
    call = wrapped("x", None)
    assert call.cr_code is handler.__code__  # the handler's coroutine itself: no frame added
    assert await call == "answered x"
    assert recorder.slept == recorder.burnt == []


async def test_a_delay_sleeps_each_call_and_cpu_burns_instead():
    faults, recorder = layer("slowed")
    wrapped = faults(handler)
    faults.apply(Faults(delay_ms=250))
    assert await wrapped(1, None) == "answered 1"
    faults.apply(Faults(delay_ms=40, cpu=True))
    await wrapped(2, None)
    assert recorder.slept == [0.25]
    assert recorder.burnt == pytest.approx([0.005] * 8)  # in slices, the loop's turn between
    assert (injected("slowed", "delay"), injected("slowed", "cpu")) == (1, 1)


@pytest.mark.parametrize(("code", "error"), [("INTERNAL", Internal), ("UNAVAILABLE", Unavailable)])
async def test_a_failure_raises_the_error_of_its_code(code, error):
    faults, _ = layer(f"failing-{code}")
    faults.apply(Faults(fail_rate=1.0, fail_code=code))
    with pytest.raises(error) as raised:
        await faults(handler)("x", None)
    assert raised.value.code == getattr(grpc.StatusCode, code)
    assert injected(f"failing-{code}", "fail") == 1


@given(
    st.floats(0, 1),
    st.lists(st.floats(0, 1, exclude_max=True), min_size=1, max_size=50),
)
async def test_exactly_the_calls_whose_draw_falls_under_the_rate_fail(rate, draws):
    faults, _ = layer("sampled", draws)
    faults.apply(Faults(fail_rate=rate))
    wrapped = faults(handler)
    failed = 0
    for _ in draws:
        try:
            await wrapped("x", None)
        except Internal:
            failed += 1
    assert failed == sum(draw < rate for draw in draws)


async def test_the_instance_logs_when_faults_turn_on_and_off_and_calls_recover():
    faults, recorder = layer("toggled")
    wrapped = faults(handler)
    with capture_logs() as logs:
        faults.apply(NO_FAULTS)  # nothing was on: nothing to say
        faults.apply(Faults(delay_ms=10, fail_rate=0.25, fail_code="UNAVAILABLE"))
        faults.apply(NO_FAULTS)
    assert [(e["event"], e["log_level"]) for e in logs] == [
        ("faults.on", "warning"),
        ("faults.off", "info"),
    ]
    assert logs[0]["fail_code"] == "UNAVAILABLE" and logs[0]["delay_ms"] == 10
    await wrapped("x", None)
    assert recorder.slept == []
