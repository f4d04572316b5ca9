"""A scenario's route mix: parsed from NAME=WEIGHT text, each route picked at its share."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cellwork.loadgen import Mix, parse_mix

NAMES = ("read", "write", "list")
weights = st.lists(st.integers(0, 50), min_size=1, max_size=3).filter(lambda w: sum(w) > 0)


def test_a_mix_parses_to_its_weights_and_shares():
    mix = parse_mix("read=70,write=20,list=10", NAMES)
    assert mix.as_dict() == {"read": 70, "write": 20, "list": 10}
    assert mix.share("read") == pytest.approx(0.7)
    assert parse_mix(mix.as_text(), NAMES) == mix
    assert parse_mix(" read = 1 , write=0 ", NAMES).names() == ("read",)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("read=1,search=2", "unknown route 'search' in mix \\(routes: read, write, list\\)"),
        ("read=1,read=2", "twice"),
        ("read=x", "must be an integer"),
        ("read=-1,write=3", "must not be negative"),
        ("read=0,write=0", "positive weight"),
        ("", "positive weight"),
        ("read", "not NAME=WEIGHT"),
    ],
)
def test_a_bad_mix_is_refused_with_a_readable_message(text, message):
    with pytest.raises(ValueError, match=message):
        parse_mix(text, NAMES)


@given(weights, st.floats(-1, 2))
def test_pick_only_returns_names_with_a_positive_weight(ws, u):
    mix = Mix(tuple(zip(NAMES, ws, strict=False)))
    assert mix.pick(u) in mix.names()


@given(weights, st.integers(1, 20))
def test_pick_gives_each_name_exactly_its_share_of_a_uniform_grid(ws, per_unit):
    mix = Mix(tuple(zip(NAMES, ws, strict=False)))
    n = mix.total * per_unit
    picks = [mix.pick((i + 0.5) / n) for i in range(n)]
    for name, weight in mix.weights:
        assert picks.count(name) == weight * per_unit
