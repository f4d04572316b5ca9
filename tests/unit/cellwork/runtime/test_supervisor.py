"""What the supervisor's shell decides before it starts anything: the cell's settings."""

import pytest

from cellwork.runtime.cellfile import CellFileError, CellSpec
from cellwork.runtime.supervisor import Supervisor, cell_settings


def spec_with(env: dict[str, str], service_env: dict[str, str] | None = None) -> CellSpec:
    return CellSpec.model_validate(
        {"name": "t", "env": env, "services": {"echo": {"module": "m", "env": service_env or {}}}}
    )


def test_registry_settings_come_from_the_cell_env_over_the_environment():
    spec = spec_with(
        {"CELLWORK_REGISTRY_BUCKET": "cell_bucket", "CELLWORK_REGISTRY_TTL": "7"},
        service_env={"CELLWORK_REGISTRY_BUCKET": "one_service_only"},
    )
    environ = {"CELLWORK_REGISTRY_BUCKET": "env_bucket", "CELLWORK_STREAM_REPLICAS": "3"}
    settings = cell_settings(spec, environ)
    assert settings.registry_bucket == "cell_bucket"
    assert settings.registry_ttl == 7.0
    assert settings.stream_replicas == 3


def test_registry_settings_default_to_what_an_instance_uses_by_default():
    settings = cell_settings(spec_with({}), {})
    assert (settings.registry_bucket, settings.registry_ttl, settings.stream_replicas) == (
        "cellwork_registry",
        3.0,
        1,
    )


def test_a_cell_env_value_that_does_not_parse_is_a_cell_file_error(tmp_path):
    spec = spec_with({"CELLWORK_STREAM_REPLICAS": "many"})
    with pytest.raises(CellFileError, match="stream_replicas"):
        Supervisor(spec, base_dir=tmp_path)
