"""Settings read from a given environment, as the process started with it reads them."""

import pytest
from pydantic import ValidationError

from cellwork.config.settings import ServiceSettings, settings_from_env


class WithOwnKnob(ServiceSettings):
    knob: int = 1


def test_settings_from_env_reads_the_mapping_and_not_this_process_environment(monkeypatch):
    monkeypatch.setenv("CELLWORK_REGISTRY_BUCKET", "from_this_process")
    given = settings_from_env(ServiceSettings, {"CELLWORK_REGISTRY_BUCKET": "given"})
    assert given.registry_bucket == "given"
    assert settings_from_env(ServiceSettings, {}).registry_bucket == "cellwork_registry"


def test_settings_from_env_matches_names_as_pydantic_settings_does():
    read = settings_from_env(
        WithOwnKnob,
        {"cellwork_registry_ttl": "7.5", "CELLWORK_KNOB": "3", "REGISTRY_BUCKET": "no prefix"},
    )
    assert (read.registry_ttl, read.knob, read.registry_bucket) == (7.5, 3, "cellwork_registry")


def test_settings_from_env_refuses_a_value_that_does_not_parse():
    with pytest.raises(ValidationError, match="registry_ttl"):
        settings_from_env(ServiceSettings, {"CELLWORK_REGISTRY_TTL": "soon"})
