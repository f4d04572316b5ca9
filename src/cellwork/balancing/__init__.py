"""Balancing: client-side, one channel per endpoint, p2c on in-flight x EWMA latency."""

from cellwork.balancing.balancer import Balancer, Endpoint
from cellwork.balancing.policy import PowerOfTwoChoices, RoundRobin, make_policy
from cellwork.balancing.stats import EjectionPolicy, EndpointStats

__all__ = [
    "Balancer",
    "EjectionPolicy",
    "Endpoint",
    "EndpointStats",
    "PowerOfTwoChoices",
    "RoundRobin",
    "make_policy",
]
