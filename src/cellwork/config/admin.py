"""What an operator does to live settings (``cellwork config``, ``cellwork chaos
delay|fail|clear``): read a setting, set some after checking them, clear a group.

A value is checked against the JSON Schema the service's instances published for its
group, before anything is written: one that does not fit is refused
(``ValidationFailed``, saying why) and the bucket is left as it was. Keys are named as
``config.dynamic`` lays them out; a command names a setting ``SERVICE.GROUP.FIELD``
and, for one instance, adds ``--instance ID``, which must be in the registry.

Every function binds to the buckets as they are: none creates one.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from typing import Any

from nats.js.client import JetStreamContext
from nats.js.errors import BucketNotFoundError

from cellwork.config.bucket import ConfigBucket, current_values
from cellwork.config.dynamic import SCHEMA_FIELD, ConfigKey, check_value, field_names
from cellwork.discovery.instance import InstanceInfo, safe_token
from cellwork.errors import InvalidArgument, NotFound, ValidationFailed


def parse_setting(name: str) -> tuple[str, str, str]:
    """``SERVICE.GROUP.FIELD`` as (service, group, field); raises InvalidArgument."""
    parts = name.split(".")
    if len(parts) != 3 or not all(parts):
        raise InvalidArgument(
            f"a setting is named SERVICE.GROUP.FIELD (feed.faults.delay_ms): {name!r}"
        )
    try:
        key = ConfigKey.parse(name)
    except ValueError as exc:
        raise InvalidArgument(str(exc)) from None
    if key.is_schema:
        raise InvalidArgument(f"{SCHEMA_FIELD} is no setting: it holds the group's schema")
    return key.service, key.group, key.field


async def group_schema_of(bucket: ConfigBucket, service: str, group: str) -> dict[str, Any]:
    """The schema instances of ``service`` published for ``group``; raises NotFound
    (naming the groups it has) when there is none."""
    schemas = await bucket.schemas(safe_token(service))
    if group not in schemas:
        if not schemas:
            raise NotFound(
                f"no instance of {service!r} has published live settings (is it running?)"
            )
        raise NotFound(
            f"{service} has no live settings group {group!r} (it has {', '.join(sorted(schemas))})"
        )
    return schemas[group]


async def read_setting(js: JetStreamContext, bucket_name: str, name: str) -> dict[str, Any]:
    """A setting as it stands: its service-wide value (None when unset) and revision,
    each instance's override, and the default the schema gives."""
    service, group, field = parse_setting(name)
    bucket = await ConfigBucket.bind(js, bucket_name)
    schema = await group_schema_of(bucket, service, group)
    if field not in schema.get("properties", {}):
        fields = ", ".join(field_names(schema))
        raise NotFound(f"{service}.{group} has no setting {field!r} (it has {fields})")
    key = str(ConfigKey(service, group, field))
    found = await bucket.get(key)
    overrides = await bucket.current(f"{key}.*")
    return {
        "key": key,
        "value": None if found is None else _decoded(found[0]),
        "revision": None if found is None else found[1],
        "default": schema["properties"][field].get("default"),
        "instances": {k.rpartition(".")[2]: _decoded(v) for k, v in sorted(overrides.items())},
    }


async def write_settings(
    js: JetStreamContext,
    bucket_name: str,
    registry_bucket: str,
    service: str,
    group: str,
    values: Mapping[str, Any],
    *,
    instance: str | None = None,
) -> dict[str, int]:
    """Check every value against the group's schema, then write them in the order given
    (service-wide, or ``instance``'s overrides); returns each key's new revision.

    Raises ValidationFailed for a value that does not fit (nothing is written),
    NotFound for an unknown service, group or instance."""
    bucket = await ConfigBucket.bind(js, bucket_name)
    schema = await group_schema_of(bucket, service, group)
    for field, value in values.items():
        problem = check_value(schema, field, value)
        if problem is not None:
            shown = json.dumps(value)
            raise ValidationFailed(f"refused {service}.{group}.{field} = {shown}: {problem}")
    if instance is not None:
        await check_instance(js, registry_bucket, service, instance)
    written: dict[str, int] = {}
    for field, value in values.items():
        key = str(ConfigKey(service, group, field, instance))
        written[key] = await bucket.put(key, json.dumps(value).encode())
    return written


async def clear_group(
    js: JetStreamContext,
    bucket_name: str,
    service: str,
    group: str,
    *,
    instance: str | None = None,
) -> list[str]:
    """Delete every value of ``group`` set for ``service`` (service-wide and for each
    instance), or only ``instance``'s overrides; returns the keys deleted."""
    bucket = await ConfigBucket.bind(js, bucket_name)
    await group_schema_of(bucket, service, group)
    prefix = f"{safe_token(service)}.{group}"
    keys = {*await bucket.current(f"{prefix}.*"), *await bucket.current(f"{prefix}.*.*")}
    chosen = []
    for key in sorted(keys):
        parsed = ConfigKey.parse(key)
        if parsed.is_schema:
            continue
        if instance is None or parsed.instance == safe_token(instance):
            chosen.append(key)
    for key in chosen:
        await bucket.delete(key)
    return chosen


async def check_instance(
    js: JetStreamContext, registry_bucket: str, service: str, instance: str
) -> None:
    """Raise NotFound unless ``instance`` of ``service`` is in the registry now."""
    try:
        kv = await js.key_value(registry_bucket)
    except BucketNotFoundError:
        raise NotFound(f"there is no registry bucket {registry_bucket!r}") from None
    ids = []
    for value in (await current_values(kv, f"{safe_token(service)}.*")).values():
        with contextlib.suppress(ValueError):
            ids.append(InstanceInfo.from_json(value).instance_id)
    if instance not in ids:
        running = ", ".join(sorted(ids)) or "none"
        raise NotFound(f"{service} has no instance {instance!r} in the registry (it has {running})")


def _decoded(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode(errors="replace")
