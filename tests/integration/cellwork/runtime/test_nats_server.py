"""The embedded nats-server, as ``cellwork up`` and the tests run it."""

import json
import urllib.request

from cellwork.testing import NatsServer


def test_the_embedded_nats_server_serves_its_monitoring_endpoint(nats_server: NatsServer) -> None:
    varz = json.loads(urllib.request.urlopen(f"{nats_server.monitor_url}/varz", timeout=5).read())
    assert varz["port"] == nats_server.port
    jsz = json.loads(urllib.request.urlopen(f"{nats_server.monitor_url}/jsz", timeout=5).read())
    assert "config" in jsz or "streams" in jsz
