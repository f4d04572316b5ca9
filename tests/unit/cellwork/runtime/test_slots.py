from cellwork.runtime.slots import Slot


class Alive:
    returncode = None


def slot(**kw):
    s = Slot("echo", 1, "m", {}, **kw)
    s.process = Alive()
    return s


def test_instance_that_never_became_healthy_is_hung_after_the_startup_timeout():
    s = slot(started_at=100.0)
    assert not s.hung(120.0, hang_timeout=5, startup_timeout=30)
    assert s.hung(131.0, hang_timeout=5, startup_timeout=30)


def test_instance_that_stopped_answering_is_hung_after_the_hang_timeout():
    s = slot(started_at=100.0, last_answer=110.0, serving_since=101.0)
    assert not s.hung(114.0, hang_timeout=5, startup_timeout=30)
    assert s.hung(115.5, hang_timeout=5, startup_timeout=30)


def test_the_startup_timeout_counts_from_when_nats_came_back_if_that_is_later():
    s = slot(started_at=100.0)
    assert not s.hung(140.0, hang_timeout=5, startup_timeout=30, startup_from=120.0)
    assert s.hung(150.5, hang_timeout=5, startup_timeout=30, startup_from=120.0)


def test_a_stopping_or_dead_instance_is_never_hung():
    assert not slot(started_at=0.0, stopping=True).hung(1000.0, 5, 30)
    dead = Slot("echo", 0, "m", {})
    assert not dead.hung(1000.0, 5, 30)


def test_status_row_has_every_field_the_cli_prints():
    row = slot(started_at=10.0, pid=42, host="h", grpc_port=1, metrics_port=2).describe(15.0, 0)
    assert row == {
        "service": "echo",
        "id": "echo-1",
        "pid": 42,
        "host": "h",
        "grpc_port": 1,
        "metrics_port": 2,
        "status": "STOPPED",
        "restarts": 0,
        "uptime": 5.0,
    }
