"""Choosing an endpoint: power of two choices on cost, round robin, and nothing else."""

import random
from dataclasses import dataclass

import pytest

from cellwork.balancing.policy import PowerOfTwoChoices, RoundRobin, make_policy
from cellwork.balancing.stats import EndpointStats


@dataclass
class Candidate:
    name: str
    stats: EndpointStats


def test_p2c_picks_the_cheaper_of_two():
    cheap = Candidate("cheap", EndpointStats(initial_latency=0.001))
    dear = Candidate("dear", EndpointStats(initial_latency=0.050))
    policy = PowerOfTwoChoices(random.Random(1))
    assert all(policy.choose([cheap, dear], 0.0) is cheap for _ in range(100))


def test_p2c_never_picks_the_costliest_of_three():
    candidates = [
        Candidate(str(i), EndpointStats(initial_latency=0.001 * (i + 1))) for i in range(3)
    ]
    policy = PowerOfTwoChoices(random.Random(7))
    picks = [policy.choose(candidates, 0.0).name for _ in range(3000)]
    assert picks.count("2") == 0
    assert picks.count("0") > picks.count("1") > 0


def test_round_robin_is_fair():
    candidates = [Candidate(str(i), EndpointStats()) for i in range(3)]
    policy = make_policy("round_robin")
    assert isinstance(policy, RoundRobin)
    picks = [policy.choose(candidates, 0.0).name for _ in range(300)]
    assert {n: picks.count(n) for n in "012"} == {"0": 100, "1": 100, "2": 100}


def test_unknown_policy_is_refused_by_name():
    with pytest.raises(ValueError, match="random-ish"):
        make_policy("random-ish")
