"""learnfeed's load scenario, its pure parts: the mix, the interaction kinds, feed.ready timing."""

import ast
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import learnfeed.loadgen
from learnfeed import contract
from learnfeed.loadgen import (
    DEFAULT_MIX,
    INTERACTION_MIX,
    ROUTES,
    ReadyTracker,
    Settings,
    create_scenario,
)


def test_the_default_mix_parses_to_learnfeeds_three_routes():
    settings = create_scenario().settings
    assert settings.mix.as_dict() == {"feed": 70, "home": 20, "interaction": 10}
    assert settings.mix.as_text() == DEFAULT_MIX
    assert set(ROUTES) == {"feed", "home", "interaction"}


def test_a_mix_may_leave_routes_out():
    assert create_scenario(mix="feed=1,home=0").settings.mix.names() == ("feed",)


@pytest.mark.parametrize(
    ("mix", "message"),
    [
        ("feed=1,search=2", "unknown route 'search' in mix \\(routes: feed, home, interaction\\)"),
        ("feed=x", "weight of 'feed' must be an integer"),
        ("interaction=0", "positive weight"),
    ],
)
def test_a_mix_naming_no_route_of_learnfeed_is_refused(mix, message):
    with pytest.raises(ValueError, match=message):
        create_scenario(mix=mix)


def test_interactions_use_every_kind_of_the_contract_mostly_views():
    assert INTERACTION_MIX.names() == contract.INTERACTION_KINDS
    assert max(INTERACTION_MIX.weights, key=lambda kind: kind[1])[0] == "view"


def test_sockets_default_to_one_per_user_and_never_exceed_the_users():
    assert Settings(users=7).socket_count == 7
    assert Settings(users=7, sockets=3).socket_count == 3
    assert Settings(users=7, sockets=70).socket_count == 7
    assert Settings(users=7, sockets=0).socket_count == 0


@pytest.mark.parametrize(
    ("users", "sockets", "message"), [(0, None, "--users"), (5, -1, "--sockets")]
)
def test_settings_out_of_range_are_refused_by_option_name(users, sockets, message):
    with pytest.raises(ValueError, match=message):
        Settings(users=users, sockets=sockets)


def test_a_frame_after_a_read_is_timed_from_the_reads_answer():
    ready = ReadyTracker()
    ready.read_answered("u1", answered_at=10.0, version=3)
    assert ready.ready("u1", at=10.25, version=4) == pytest.approx(0.25)
    assert ready.ready("u1", at=11.0, version=5) is None  # no read outstanding any more
    assert (ready.frames, ready.untimed, len(ready.latencies)) == (2, 1, 1)


def test_a_frame_not_newer_than_what_the_read_saw_is_not_its_answer():
    ready = ReadyTracker()
    ready.read_answered("u1", 1.0, version=7)
    assert ready.ready("u1", 1.1, version=7) is None
    assert ready.ready("u2", 1.2, version=9) is None  # another user's frame
    assert ready.ready("u1", 1.5, version=8) == pytest.approx(0.5)


def test_the_latest_read_restarts_the_clock():
    ready = ReadyTracker()
    ready.read_answered("u1", 1.0, version=1)
    ready.read_answered("u1", 4.0, version=1)  # coalesced into one refresh: the wait is from here
    assert ready.ready("u1", 4.1, version=2) == pytest.approx(0.1)


def test_a_read_answered_after_its_fresh_version_was_announced_waits_for_nothing():
    ready = ReadyTracker()
    ready.read_answered("u1", 1.0, version=1)
    assert ready.ready("u1", 1.2, version=2) is not None
    ready.read_answered("u1", 1.3, version=1)  # a slow answer: version 2 is already out
    assert ready.outstanding == 0
    assert ready.ready("u1", 12.0, version=3) is None


@given(
    st.lists(
        st.tuples(st.booleans(), st.sampled_from(["a", "b"]), st.floats(0, 5), st.integers(0, 5)),
        max_size=60,
    )
)
def test_every_frame_is_timed_or_untimed_and_no_latency_is_negative(events):
    ready = ReadyTracker()
    now = 0.0
    for is_read, user, step, version in events:
        now += step
        if is_read:
            ready.read_answered(user, now, version)
        else:
            ready.ready(user, now, version)
    assert ready.frames == ready.untimed + len(ready.latencies)
    assert all(latency >= 0 for latency in ready.latencies)


def test_the_scenario_knows_learnfeed_only_by_its_contract_not_its_services():
    tree = ast.parse(Path(learnfeed.loadgen.__file__).read_text())
    imported = {
        node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module
    } | {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    }
    assert {name for name in imported if name.startswith("learnfeed")} == {"learnfeed.contract"}
