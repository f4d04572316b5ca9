"""Live settings, the pure part: key names, a group's layered values, schema checks.

A service declares *groups* of live settings, each a pydantic model
(``service.live("faults", Faults, apply)``). Their values live in the config bucket
(a NATS key-value bucket, ``config.bucket``), one key per field, in a layout every
part (instances, the CLI, the supervisor) agrees on through this module::

    <service>.<group>.<field>              the value of a field, service-wide (JSON)
    <service>.<group>.<field>.<instance>   an override for one instance (JSON)
    <service>.<group>._schema              the group's JSON Schema, published by its
                                           instances (no field can be named _schema:
                                           pydantic keeps underscored names private)

An instance's value of a group is its model validated over the code's initial value,
the service-wide fields over that, its own overrides over those; a field that is a
nested model merges field by field across the three (``merge_layers``), so a layer's
``{"open_seconds": 2}`` changes that one field of the breaker and keeps the rest.
A value arrives one key at a time; a key whose value does not validate (not JSON,
unknown field, out of range, or wrong together with the others) is refused: the
instance keeps what it applied, and nothing of the refused key is kept. Deleting a
key falls back to the layer under it.

Nothing here does I/O; ``config.live`` wires it to the bucket.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import jsonschema
from pydantic import BaseModel, ValidationError

from cellwork.discovery.instance import safe_token

M = TypeVar("M", bound=BaseModel)

SCHEMA_FIELD = "_schema"
_GROUP = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")


def check_group_name(group: str) -> str:
    """``group`` if it can name a group (a letter, then letters, digits, ``_``; at most
    64); raises ValueError otherwise."""
    if not _GROUP.match(group):
        raise ValueError(f"a live settings group is named by [A-Za-z][A-Za-z0-9_]*: {group!r}")
    return group


@dataclass(frozen=True, slots=True)
class ConfigKey:
    """One key of the config bucket: a field's value (service-wide or for ``instance``),
    or, with ``field == SCHEMA_FIELD``, a group's schema."""

    service: str
    group: str
    field: str
    instance: str | None = None

    @property
    def is_schema(self) -> bool:
        return self.field == SCHEMA_FIELD

    def __str__(self) -> str:
        key = f"{safe_token(self.service)}.{self.group}.{self.field}"
        return key if self.instance is None else f"{key}.{safe_token(self.instance)}"

    @classmethod
    def parse(cls, key: str) -> ConfigKey:
        """Read a bucket key; raises ValueError for one not laid out as above."""
        parts = key.split(".")
        if len(parts) not in (3, 4) or not all(parts):
            raise ValueError(f"a config key is SERVICE.GROUP.FIELD[.INSTANCE]: {key!r}")
        service, group, field, *instance = parts
        if safe_token(service) != service or any(safe_token(p) != p for p in instance):
            raise ValueError(f"not a config key: {key!r}")
        check_group_name(group)
        if field == SCHEMA_FIELD and instance:
            raise ValueError(f"a schema key names no instance: {key!r}")
        if field != SCHEMA_FIELD and not field.isidentifier():
            raise ValueError(f"not a field name: {field!r} in {key!r}")
        return cls(service, group, field, instance[0] if instance else None)


def schema_key(service: str, group: str) -> str:
    """The key under which instances of ``service`` publish ``group``'s JSON Schema."""
    return str(ConfigKey(service, group, SCHEMA_FIELD))


def group_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The JSON Schema of a group's model, as its instances publish it."""
    return model.model_json_schema(mode="validation")


def field_names(schema: Mapping[str, Any]) -> list[str]:
    """The fields a published group schema names."""
    return sorted(schema.get("properties", {}))


def check_value(schema: Mapping[str, Any], field: str, value: Any) -> str | None:
    """Why ``value`` cannot be ``field`` of the group ``schema`` describes, or None when it
    can. Checked against the field's own schema: a rule across fields is the instances'
    to check (they refuse what breaks it)."""
    properties = schema.get("properties", {})
    if field not in properties:
        return f"no field {field!r} (the group has {', '.join(field_names(schema)) or 'none'})"
    own = {**properties[field], "$defs": schema.get("$defs", {})}
    error = jsonschema.exceptions.best_match(
        jsonschema.Draft202012Validator(own).iter_errors(value)
    )
    return None if error is None else error.message


def parse_cli_value(text: str) -> Any:
    """A value as typed on a command line: JSON when it parses (``200``, ``true``,
    ``"x"``, ``[1]``), else the text itself (``INTERNAL``)."""
    try:
        return json.loads(text)
    except ValueError:
        return text


@dataclass(frozen=True, slots=True)
class Outcome:
    """What offering or withdrawing one key did: ``applied`` (a new value went to the
    group's ``apply``), or ``refused`` with the reason; neither when nothing changed."""

    applied: bool = False
    refused: str | None = None


UNCHANGED = Outcome()


class LiveGroup(Generic[M]):
    """One group of live settings of one instance: the layers the bucket gave it and
    the value applied. Not thread-safe; one task feeds it.

    ``apply(value)`` is called with each new value (not with the initial one, which is
    the code's own); what it raises refuses the change, and the value stays.
    """

    def __init__(self, name: str, model: type[M], apply: Callable[[M], None], initial: M) -> None:
        self.name = check_group_name(name)
        self.model = model
        self.schema = group_schema(model)
        self._apply = apply
        self._base = initial.model_dump()
        self.value: M = initial
        # The fields each layer holds: service-wide, and this instance's own overrides.
        self._layers: tuple[dict[str, Any], dict[str, Any]] = ({}, {})

    def offer(self, field: str, raw: bytes, *, instance: bool = False) -> Outcome:
        """Take ``field``'s new JSON value from the service-wide or the instance layer."""
        if field not in self.model.model_fields:
            return Outcome(refused=f"no field {field!r} in {self.name}")
        try:
            value = json.loads(raw)
        except ValueError:
            return Outcome(refused="not JSON")
        layer = self._layers[instance]
        had, before = field in layer, layer.get(field)
        layer[field] = value
        outcome = self._settle()
        if outcome.refused is not None:  # keep nothing of a refused value
            if had:
                layer[field] = before
            else:
                del layer[field]
        return outcome

    def withdraw(self, field: str, *, instance: bool = False) -> Outcome:
        """Forget ``field`` in one layer (its key was deleted): the layer under it shows."""
        layer = self._layers[instance]
        if field not in layer:
            return UNCHANGED
        before = layer.pop(field)
        outcome = self._settle()
        if outcome.refused is not None:
            layer[field] = before
        return outcome

    def _settle(self) -> Outcome:
        service, own = self._layers
        try:
            value = self.model.model_validate(merge_layers(self.model, self._base, service, own))
        except ValidationError as exc:
            return Outcome(refused=_short(exc))
        if value == self.value:
            return UNCHANGED
        try:
            self._apply(value)
        except Exception as exc:  # the application's refusal: the value stays
            return Outcome(refused=f"apply raised {exc!r}")
        self.value = value
        return Outcome(applied=True)


def merge_layers(
    model: type[BaseModel], base: Mapping[str, Any], *layers: Mapping[str, Any]
) -> dict[str, Any]:
    """``base`` (a model's dump) with ``layers`` laid over it in order, merged field by
    field into nested models: a layer's ``{"open_seconds": 2}`` for a ``BreakerPolicy``
    field changes that one field and keeps the others from the layers under it. Any
    other value (a number, a list, a plain dict field, a value of the wrong type, left
    for validation to refuse) replaces what is under it.

    Own code rather than a deep-merge library: only the model knows which dicts are
    nested models (merged) and which are values (replaced whole).
    """
    merged = dict(base)
    for layer in layers:
        for name, value in layer.items():
            below = merged.get(name)
            nested = _nested_model(model, name)
            if nested is not None and isinstance(value, dict) and isinstance(below, dict):
                merged[name] = merge_layers(nested, below, value)
            else:
                merged[name] = value
    return merged


def _nested_model(model: type[BaseModel], name: str) -> type[BaseModel] | None:
    info = model.model_fields.get(name)
    annotation = info.annotation if info is not None else None
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def _short(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in error['loc']) or 'value'}: {error['msg']}"
        for error in exc.errors(include_url=False)
    )
