"""What `cellwork stream` prints and counts, and the options it refuses."""

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cellwork.stream import (
    StreamOptions,
    counts,
    frame_line,
    parse_frame,
    shown,
    subscribe_frame,
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@given(st.dictionaries(st.text(), json_values, max_size=6))
def test_every_frame_prints_as_one_line_of_json_that_reads_back_the_same(frame):
    line = frame_line(frame)
    assert "\n" not in line and "\r" not in line
    assert json.loads(line) == frame


def test_a_frame_prints_in_the_push_services_compact_spelling():
    assert frame_line({"type": "feed.ready", "version": 1}) == '{"type":"feed.ready","version":1}'


@pytest.mark.parametrize(
    ("frame", "counted"),
    [
        ({"type": "feed.ready", "version": 3}, True),
        ({"type": "error", "code": "unknown_topic"}, True),
        ("not json at all", True),
        ({"no": "type"}, True),
        ({"type": "subscribed", "topics": ["feed"]}, False),
        ({"type": "pong"}, False),
        ({"type": "ping"}, False),
    ],
)
def test_only_frames_the_server_pushes_on_its_own_count(frame, counted):
    assert counts(frame) is counted


def test_pongs_are_left_out_and_the_subscription_ack_is_shown():
    assert not shown({"type": "pong"})
    assert shown({"type": "subscribed", "topics": ["feed"]})
    assert shown({"type": "feed.ready", "version": 1})


def test_a_frame_that_is_not_json_becomes_its_text():
    assert parse_frame("hello") == "hello"
    assert parse_frame(b"\xff\xfebinary") == "\ufffd\ufffdbinary"
    assert parse_frame('{"type":"pong"}') == {"type": "pong"}


def test_the_subscribe_frame_names_the_topics():
    assert json.loads(subscribe_frame(("feed",))) == {"type": "subscribe", "topics": ["feed"]}


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"url": "http://127.0.0.1:8081/v1/stream"}, "not a WebSocket URL"),
        ({"url": "127.0.0.1:8081"}, "not a WebSocket URL"),
        ({"count": 0}, "count must be at least 1"),
        ({"timeout": 0.0}, "timeout must be positive"),
        ({"ping_interval": -1.0}, "ping_interval must be 0 or more"),
    ],
)
def test_options_that_cannot_work_are_refused_with_the_reason(options, message):
    with pytest.raises(ValueError, match=message):
        StreamOptions(**options)
