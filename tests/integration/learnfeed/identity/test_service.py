"""A real identity instance under a burst of sign-ups: each is served or refused at once as
overloaded, none waits in the hashing queue until its deadline passes."""

import asyncio
import time

import pytest
from prometheus_client import REGISTRY

from cellwork import DeadlineExceeded, Overloaded
from cellwork.rpc import connect_client
from cellwork.testing import start_service
from learnfeed.identity.hashing import cores, hashing_limits
from learnfeed.identity.service import create_service
from learnfeed.settings import LearnfeedSettings
from learnfeed.v1 import identity_pb2
from learnfeed.v1.identity_client import IdentityClient
from tests.waiting import wait_until

DEADLINE = 2.0  # the gateway's request deadline
BURST = 60


@pytest.fixture
async def identity(tmp_path, nats_server, registry):
    service = await start_service(
        create_service,
        nats_server.url,
        settings_class=LearnfeedSettings,
        state_dir=tmp_path,
        demo=True,
        instance_id="identity-burst",
    )
    client = await connect_client(registry, "identity", IdentityClient, caller="gateway")
    await client.balancer.wait_for_endpoints(1)
    yield service, client
    await client.close()
    await service.close()


async def test_a_burst_of_sign_ups_is_served_or_refused_at_once_never_timed_out(identity):
    _service, client = identity

    async def sign_up(n: int) -> tuple[str, float]:
        request = identity_pb2.SignUpRequest(
            email=f"burst-{n}@example.org", password="correct horse battery", name="Burst"
        )
        started = time.monotonic()
        try:
            await client.sign_up(request, timeout=DEADLINE)
            outcome = "ok"
        except Overloaded:
            outcome = "overloaded"
        except DeadlineExceeded:
            outcome = "timed_out"
        return outcome, time.monotonic() - started

    outcomes = await asyncio.gather(*(sign_up(n) for n in range(BURST)))
    kinds = [kind for kind, _ in outcomes]
    assert kinds.count("timed_out") == 0
    assert set(kinds) == {"ok", "overloaded"}  # more than the queue takes: some refused
    assert kinds.count("ok") >= hashing_limits(cores()).min_limit  # the queue's floor
    refusals = [took for kind, took in outcomes if kind == "overloaded"]
    assert [took for took in refusals if took > DEADLINE / 2] == []  # at once, not queued
    shed = REGISTRY.get_sample_value("learnfeed_identity_hashing_shed_total") or 0.0
    assert shed >= kinds.count("overloaded")
    await wait_until(
        lambda: REGISTRY.get_sample_value("learnfeed_identity_hashing_in_flight") == 0,
        "every hash to finish",
    )
