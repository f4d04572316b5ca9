"""``Service``: one instance of a cellwork service, wired where it is built.

A service module builds one in its composition root and hands it to the runtime
(``cellwork serve MODULE`` calls ``create_service(settings)``). Everything a handler
needs exists once the root returns, so handlers are built with their collaborators::

    def create_service(settings: ServiceSettings) -> Service:
        service = Service("orders", settings)
        engine = service.add_database(database_url, MIGRATIONS)    # migrated on start
        payments = service.client("payments", PaymentsClient)      # balanced, typed
        servicer = OrdersServicer(OrderStore(engine), payments, service.publisher)
        service.add_grpc(add_OrdersServicer_to_server, servicer, "shop.v1.Orders")
        return service

Nothing connects at construction. Clients, the publisher and the fan-out exist at
once and are connected on start; calls before start fail with ``Unavailable``
(``NoEndpoints`` for a client).

Lifecycle (shared by every long-lived part): ``start()`` serves metrics, connects
NATS (waiting, with a logged back-off, while it is down), applies the live settings
the config bucket holds (``live``; faults too), ensures streams, connects
the publisher and fan-out, migrates databases, starts outbox relays and client
watchers, serves gRPC (NOT_SERVING), runs start hooks, starts jobs, consumers and
HTTP servers, and only then turns health SERVING and registers;
``drain(timeout)`` publishes DRAINING, waits for clients to notice, deregisters,
stops taking calls and finishes in-flight ones, runs stop hooks, flushes events and
outboxes, disposes databases; ``close()`` releases what is left.

When NATS goes away the instance keeps serving (static stability): its clients
keep their last-known endpoints, its registration puts its record again as soon
as NATS is back (re-creating the registry bucket if the server lost it), and
after each reconnection the service ensures its streams again, whatever state
the server came back in, before running its ``on_reconnect`` hooks. Live settings
keep their applied values meanwhile and catch up when NATS is back.

Every instance injects faults on request (``cellwork chaos delay|fail``): a
``FaultLayer`` innermost in its server chain, fed by the live group ``faults``.
``dependencies()`` tells which infrastructure is degraded meanwhile (also the
gauge ``cellwork_dependency_up``), for a readiness check's body.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, TypeVar, overload
from wsgiref.simple_server import WSGIServer

from grpc import aio
from nats.aio.client import Client as NatsClient
from pydantic import BaseModel, ConfigDict, Field

from cellwork.config.dynamic import LiveGroup
from cellwork.config.live import LiveSettings
from cellwork.config.settings import ServiceSettings
from cellwork.discovery.instance import InstanceInfo, InstanceStatus
from cellwork.discovery.registry import Registration, Registry
from cellwork.discovery.watcher import RegistryWatcher
from cellwork.events.connection import wait_for_nats
from cellwork.events.consumer import Consumer, Handler
from cellwork.events.fanout import Fanout, MessageHandler, Subscription
from cellwork.events.publisher import Publisher
from cellwork.events.streams import StreamSpec, ensure_streams
from cellwork.observability.logging import get_logger
from cellwork.observability.metrics import dependency_up, start_metrics_server
from cellwork.resilience.backoff import backoff
from cellwork.resilience.policy import CallPolicy
from cellwork.resilience.tasks import stop_task
from cellwork.rpc.client import Client, balanced_client
from cellwork.rpc.faults import FAULTS_GROUP, FaultLayer, Faults
from cellwork.rpc.interceptors import Layer
from cellwork.rpc.server import RegisterFn, RpcServer

if TYPE_CHECKING:  # SQLAlchemy and the HTTP edge load only in services that use them
    from sqlalchemy.ext.asyncio import AsyncEngine
    from starlette.types import ASGIApp

    from cellwork.data.migrations import Migration
    from cellwork.events.outbox import Outbox
    from cellwork.gateway.server import HttpServer

StubT = TypeVar("StubT")
M = TypeVar("M", bound=BaseModel)
ClientT = TypeVar("ClientT", bound=Client[Any])
Hook = Callable[[], Awaitable[None]]
Job = Callable[[], Coroutine[Any, Any, None]]

_log = get_logger("cellwork.service")

REGISTRY_WRITE_BOUND = 1.0  # seconds a drain waits for each registry write


class Service:
    """One running instance: gRPC server, registry entry, metrics, clients, events, hooks."""

    def __init__(self, name: str, settings: ServiceSettings | None = None) -> None:
        self.settings = settings or ServiceSettings()
        # The name the cell (or deployment) gives the service wins over the module's own;
        # what the code owns (its database schema) stays under the module's own name.
        self.name = self.settings.service or name
        self.declared_name = name
        self.layers: list[Layer] = []
        # Innermost, after every layer of the service's own: a fault is injected where
        # the handler would run, inside whatever policy is meant to cope with it.
        self.faults = FaultLayer(self.name)
        self.live_settings = LiveSettings(self.name, self.settings.instance_id)
        self.publisher = Publisher()
        self.bus = Fanout()
        self.stopped = asyncio.Event()
        self.metrics_port = 0
        self.server: RpcServer | None = None
        self.registration: Registration | None = None
        self.http_servers: list[HttpServer] = []
        self._streams: list[StreamSpec] = []
        self._servicers: list[tuple[RegisterFn, Any, str]] = []
        self._consumer_specs: list[tuple[Handler, dict[str, Any]]] = []
        self._consumers: list[Consumer] = []
        self._http_specs: list[tuple[ASGIApp, int, dict[str, Any]]] = []
        self._databases: list[tuple[AsyncEngine, tuple[Migration, ...], str]] = []
        self._outboxes: list[Outbox] = []
        self._clients: list[Client[Any]] = []
        self._watchers: list[RegistryWatcher] = []
        self._jobs: list[Job] = []
        self._job_tasks: list[asyncio.Task[None]] = []
        self._on_start: list[Hook] = []
        self._on_stop: list[Hook] = []
        self._on_reconnect: list[Hook] = []
        self._nc: NatsClient | None = None
        self._registry: Registry | None = None
        self._metrics_server: WSGIServer | None = None
        self._started = False
        self._serving = False
        self._after_reconnect: asyncio.Task[None] | None = None
        self._standing_in: asyncio.Task[None] | None = None
        self.live(FAULTS_GROUP, Faults, self.faults.apply)
        self.stand_in = self.live(STAND_IN_GROUP, StandIn, self._advertise)

    # -- declaring (in the composition root, before start) -------------------------

    def add_grpc(self, register: RegisterFn, servicer: Any, full_name: str) -> None:
        """Serve ``servicer`` (registered with its generated ``add_*_to_server``)."""
        self._servicers.append((register, servicer, full_name))

    def add_streams(self, *specs: StreamSpec) -> None:
        """Ensure these JetStream streams exist (created or updated) on start."""
        self._streams.extend(specs)

    def add_consumer(
        self, handler: Handler, *, stream: str, durable: str, subject: str, **options: Any
    ) -> None:
        """Run ``handler`` for each event of a durable consumer (a group across instances).

        The handler's return acks the message. Raising ``Poison`` (or failing to decode
        or validate it) dead-letters it at once; any other error redelivers it with
        back-off until it is ``retry_max_age`` old (``CELLWORK_EVENT_RETRY_MAX_AGE``
        unless given), then dead-letters it. Options go to ``Consumer``.
        """
        spec = {"stream": stream, "durable": durable, "subject": subject, **options}
        self._consumer_specs.append((handler, spec))

    def consume(
        self, *, stream: str, durable: str, subject: str, **options: Any
    ) -> Callable[[Handler], Handler]:
        """``add_consumer`` as a decorator."""

        def register(handler: Handler) -> Handler:
            self.add_consumer(handler, stream=stream, durable=durable, subject=subject, **options)
            return handler

        return register

    def add_http(self, app: ASGIApp, port: int, **options: Any) -> None:
        """Serve an ASGI app on ``port`` (shared with sibling instances via SO_REUSEPORT)."""
        self._http_specs.append((app, port, options))

    def add_database(
        self, url: str, migrations: Sequence[Migration] = (), *, owner: str | None = None
    ) -> AsyncEngine:
        """An engine for ``url`` (no connection yet), migrated on start, disposed on drain.

        Migrations are recorded under ``owner`` (the name the service was declared
        with, whatever a cell renames it to), so services that share one database
        never take each other's schema for their own.
        """
        from cellwork.data.engine import open_engine

        engine = open_engine(url)
        self._databases.append((engine, tuple(migrations), owner or self.declared_name))
        return engine

    def add_outbox(self, engine: AsyncEngine, **options: Any) -> Outbox:
        """This instance's transactional outbox on ``engine``: its table is migrated on
        start, its relay runs from start until drain (sending what is left first).

        Add events with ``outbox.add(conn, ...)`` inside a transaction on ``engine``;
        options go to ``Outbox`` (``poll_interval``, ``orphan_after``...).
        """
        from cellwork.events.outbox import Outbox

        outbox = Outbox(
            engine, source=self.declared_name, writer=self.settings.instance_id, **options
        )
        self._outboxes.append(outbox)
        return outbox

    @overload
    def client(self, service: str, kind: type[ClientT], **options: Any) -> ClientT: ...

    @overload
    def client(
        self, service: str, kind: Callable[[aio.Channel], StubT], **options: Any
    ) -> Client[StubT]: ...

    def client(self, service: str, kind: Any, **options: Any) -> Any:
        """A balanced client of another service, usable once this one has started.

        Its ``CallPolicy`` (``policy=``, or the defaults) is live: the group
        ``calls_<service>`` of this service's settings (``calls_group``).

        ``kind`` is a generated client class (``CatalogClient``: typed methods) or a
        stub class (an untyped ``Client``). Its registry watcher starts and stops with
        this service; options go to ``balanced_client``.
        """
        if self._started:
            raise RuntimeError("declare clients in the composition root, before start()")
        client = balanced_client(kind, service, caller=self.name, **options)
        self._clients.append(client)
        # Its policy is a live group of its own: `cellwork config set
        # gateway.calls_feed.breaker '{"open_seconds": 2}'` reaches this client only.
        self.live(calls_group(service), CallPolicy, client.apply, initial=client.policy)
        return client

    def live(
        self,
        group: str,
        model: type[M],
        apply: Callable[[M], None],
        *,
        initial: M | None = None,
    ) -> LiveGroup[M]:
        """Settings changed while the instance runs: ``model``'s fields, under the keys
        ``<service>.<group>.<field>`` (and ``...<field>.<instance id>`` for one instance)
        of the config bucket, set with ``cellwork config set``.

        ``apply(value)`` gets each new value, validated by ``model`` (on start too, when
        the bucket holds any): it runs on the event loop and should only swap a
        reference (``service.live("calls", CallPolicy, client.apply)``). ``initial``
        (default ``model()``) is the value before any key is set. The group's ``value``
        is the value applied now. Raises ValueError for a bad or taken group name,
        RuntimeError after start.
        """
        if self._started:
            raise RuntimeError("declare live settings in the composition root, before start()")
        made = LiveGroup(group, model, apply, model() if initial is None else initial)
        self.live_settings.add(made)
        return made

    def on_start(self, hook: Hook) -> Hook:
        """Run ``await hook()`` once connected and migrated, before health turns SERVING."""
        self._on_start.append(hook)
        return hook

    def on_reconnect(self, hook: Hook) -> Hook:
        """Run ``await hook()`` after NATS reconnects (core messages may have been lost)."""
        self._on_reconnect.append(hook)
        return hook

    def on_stop(self, hook: Hook) -> Hook:
        """Run ``await hook()`` once in-flight calls and events are finished, on drain."""
        self._on_stop.append(hook)
        return hook

    def background(self, job: Job) -> Job:
        """Run ``await job()`` as a task from start until drain (then cancelled)."""
        self._jobs.append(job)
        return job

    # -- events ---------------------------------------------------------------------

    async def broadcast(self, subject: str, data: bytes, *, confirm: bool = False) -> None:
        """Tell every instance listening on ``subject`` now (core NATS; not stored)."""
        await self.bus.broadcast(subject, data, confirm=confirm)

    def subscribe(self, subject: str, handler: MessageHandler) -> Subscription:
        """Receive ``subject``'s broadcasts in ``await handler(subject, data)``.

        Declared before start, the subscription is made on start; later, at once.
        ``await subscription.confirmed()`` returns once the server knows of it.
        """
        return self.bus.subscribe(subject, handler)

    # -- lifecycle --------------------------------------------------------------------

    @property
    def info(self) -> InstanceInfo:
        """This instance's registry record."""
        if self.registration is None:
            raise RuntimeError("not registered")
        return self.registration.info

    @property
    def serving(self) -> bool:
        """Whether the instance takes calls: started and not draining."""
        return self._serving

    def dependencies(self) -> dict[str, bool]:
        """Whether each infrastructure dependency is usable now (``nats``, ``registry``).

        A false one is degraded, not fatal: the instance keeps serving on what it
        last knew. Reads local state only (cheap enough for every ``/readyz``)."""
        nats_up = self._nc is not None and bool(self._nc.is_connected)
        registry_up = (
            nats_up
            and all(watcher.healthy for watcher in self._watchers)
            and (self.registration is None or self.registration.healthy)
        )
        return {"nats": nats_up, "registry": registry_up}

    async def start(self) -> None:
        """Connect and start every part; health turns SERVING last. Raises if a step fails.

        While NATS is down it waits (observable on its metrics port meanwhile)."""
        s = self.settings
        self._metrics_server = start_metrics_server(s.host, s.metrics_port)
        self.metrics_port = int(self._metrics_server.server_port)
        gauge = dependency_up()
        for dependency in ("nats", "registry"):
            gauge.labels(dependency).set_function(self._dependency_reading(dependency))
        self._nc = await wait_for_nats(
            s.nats_url, name=f"{self.name}/{s.instance_id}", on_reconnected=self._reconnected
        )
        self._registry = await Registry.open(
            self._nc, s.registry_bucket, s.registry_ttl, replicas=s.stream_replicas
        )
        await self.live_settings.start(self._nc, s.config_bucket, replicas=s.stream_replicas)
        js = self._nc.jetstream()
        await self._ensure_streams()
        self.publisher.start(js)
        await self.bus.attach(self._nc)
        if self._databases:
            from cellwork.data.migrations import migrate

            for engine, migrations, owner in self._databases:
                if migrations:
                    await migrate(engine, migrations, service=owner)
        await self._start_outboxes()
        for client in self._clients:
            watcher = RegistryWatcher(self._registry, client.service)
            watcher.add_listener(client.balancer.update)
            self._watchers.append(watcher)
            await watcher.start()
        self._started = True
        self.server = RpcServer(
            self.name,
            host=s.host,
            port=s.grpc_port,
            layers=[*self.layers, self.faults],
            access_log=s.access_log,
            slow_call_seconds=s.slow_call_seconds,
        )
        for register, servicer, full_name in self._servicers:
            self.server.add(register, servicer, full_name)
        port = await self.server.start()
        for hook in self._on_start:
            await hook()
        for job in self._jobs:
            self._job_tasks.append(asyncio.create_task(self._run_job(job)))
        for handler, spec in self._consumer_specs:
            given = {"retry_max_age": s.event_retry_max_age, **spec}
            consumer = Consumer(js, handler=handler, **given)
            await consumer.start()
            self._consumers.append(consumer)
        for app, http_port, options in self._http_specs:
            from cellwork.gateway.server import HttpServer

            http = HttpServer(app, s.host, http_port, **options)
            self.http_servers.append(http)
            await http.start()
        await self.server.set_serving(True)
        self._serving = True
        info = InstanceInfo(
            service=self.name,
            instance_id=s.instance_id,
            host=s.advertised(),
            grpc_port=port,
            metrics_port=self.metrics_port,
            zone=s.zone,
            version=s.version,
            status=InstanceStatus.SERVING,
            pid=os.getpid(),
            started_at=time.time(),
        )
        self.registration = Registration(self._registry, info, s.heartbeat_interval)
        await self.registration.start()
        if self.stand_in.value.address:
            self._advertise(self.stand_in.value)
        _log.info(
            "service.started", service=self.name, grpc_port=port, metrics_port=self.metrics_port
        )

    async def drain(self, timeout: float | None = None) -> None:
        """Stop taking calls, finish in-flight ones (up to ``timeout`` s), deregister."""
        timeout = self.settings.drain_timeout if timeout is None else timeout
        started = time.monotonic()
        _log.info("service.draining", service=self.name, timeout=timeout)
        self._serving = False
        if self.registration is not None and self.registration.registry.connected:
            try:  # bounded: a drain must fit in the supervisor's grace whatever NATS does
                await asyncio.wait_for(
                    self.registration.set_status(InstanceStatus.DRAINING), REGISTRY_WRITE_BOUND
                )
            except Exception as exc:  # NATS gone: the TTL deregisters us anyway
                _log.warning("service.drain_publish_failed", error=str(exc) or type(exc).__name__)
            await asyncio.sleep(self.settings.drain_propagation)

        if self.registration is not None:
            # Out of the registry before the ports close: a caller holding the record sees
            # DRAINING, then no record, never a refused connection.
            await self.registration.close()
            self.registration = None

        def left() -> float:
            return max(timeout - (time.monotonic() - started), 0.0)

        await asyncio.gather(
            *(http.drain(left()) for http in self.http_servers),
            *([self.server.drain(left())] if self.server is not None else []),
        )
        await asyncio.gather(*(consumer.drain(left()) for consumer in self._consumers))
        self._consumers = []
        await self._cancel_jobs()
        for hook in self._on_stop:
            try:
                await hook()
            except Exception:
                _log.exception("service.stop_hook_failed", service=self.name)
        await self.publisher.drain(max(left(), 1.0))
        for outbox in self._outboxes:
            await outbox.drain(max(left(), 1.0))
        await self.close()
        _log.info(
            "service.drained", service=self.name, seconds=round(time.monotonic() - started, 3)
        )

    async def close(self) -> None:
        """Release clients, the server, databases and NATS at once (idempotent)."""
        self._serving = False
        await self._cancel_jobs()
        if self._after_reconnect is not None:
            task, self._after_reconnect = self._after_reconnect, None
            await stop_task(task)
        if self._standing_in is not None:
            task, self._standing_in = self._standing_in, None
            await stop_task(task)
        for http in self.http_servers:
            await http.close()
        self.http_servers = []
        for consumer in self._consumers:
            await consumer.close()
        self._consumers = []
        await self.publisher.close()
        for outbox in self._outboxes:
            await outbox.close()
        await self.bus.close()
        await self.live_settings.close()
        for watcher in self._watchers:
            await watcher.close()
        self._watchers = []
        for client in self._clients:
            await client.close()
        if self.server is not None:
            await self.server.close()
            self.server = None
        if self.registration is not None:
            await self.registration.close()
            self.registration = None
        for engine, _migrations, _owner in self._databases:
            await engine.dispose()
        if self._nc is not None:
            nc, self._nc = self._nc, None
            try:
                await asyncio.wait_for(nc.drain(), timeout=2)
            except Exception:
                await nc.close()
        if self._metrics_server is not None:
            server, self._metrics_server = self._metrics_server, None
            await asyncio.to_thread(server.shutdown)
            server.server_close()
        self.stopped.set()

    def _advertise(self, stand_in: StandIn) -> None:
        """Publish the stand-in's address (or this instance's own again) in the registry
        record; a live group's apply only swaps, so the write runs as a task of its own."""
        registration = self.registration
        if registration is None:  # not registered yet: start() advertises it
            return
        if self._standing_in is not None:
            self._standing_in.cancel()
        address = stand_in.address or None
        self._standing_in = asyncio.create_task(
            registration.advertise(address), name=f"advertise:{self.name}"
        )

    async def _start_outboxes(self) -> None:
        if not self._outboxes or self._nc is None:
            return
        from cellwork.data.migrations import migrate
        from cellwork.events.outbox_table import OUTBOX_MIGRATIONS, OUTBOX_OWNER

        for outbox in self._outboxes:
            await migrate(outbox.engine, OUTBOX_MIGRATIONS, service=OUTBOX_OWNER)
            outbox.start(self._nc)

    def _dependency_reading(self, dependency: str) -> Callable[[], float]:
        return lambda: float(self.dependencies()[dependency])

    async def _ensure_streams(self) -> None:
        if self._streams and self._nc is not None:
            replicas = self.settings.stream_replicas
            copies = tuple(replace(spec, replicas=replicas) for spec in self._streams)
            await ensure_streams(self._nc.jetstream(), copies)

    async def _reconnected(self) -> None:
        # nats-py awaits this inside its reconnection task: the work runs in a task of
        # its own, so that a JetStream still starting up cannot hold the connection.
        _log.warning("service.nats_reconnected", service=self.name)
        if self._after_reconnect is not None:
            self._after_reconnect.cancel()
        self._after_reconnect = asyncio.create_task(
            self._restore_after_reconnect(), name=f"after-reconnect:{self.name}"
        )

    async def _restore_after_reconnect(self) -> None:
        attempt = 0
        while True:  # the server may have come back empty, or with JetStream starting
            try:
                await self._ensure_streams()
                break
            except Exception as exc:
                attempt += 1
                delay = backoff(attempt, base=0.1, cap=2.0)
                _log.warning(
                    "service.streams_ensure_failed",
                    service=self.name,
                    attempt=attempt,
                    retry_in=round(delay, 3),
                    error=str(exc) or type(exc).__name__,
                )
                await asyncio.sleep(delay)
        for hook in self._on_reconnect:
            try:
                await hook()
            except Exception:
                _log.exception("service.reconnect_hook_failed", service=self.name)

    async def _run_job(self, job: Job) -> None:
        try:
            await job()
        except asyncio.CancelledError:
            raise
        except Exception:
            _log.exception("service.job_failed", service=self.name, job=_name_of(job))

    async def _cancel_jobs(self) -> None:
        tasks, self._job_tasks = self._job_tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*(stop_task(task) for task in tasks))


STAND_IN_GROUP = "registry"


class StandIn(BaseModel):
    """The live group ``registry``: another address to publish in this instance's
    record, so that callers dial it instead (``cellwork chaos proxy`` sets it, per
    instance, to a fault proxy in front of the instance)."""

    model_config = ConfigDict(frozen=True)

    address: str = Field(
        "",
        pattern=r"^$|^[^\s:]+:[0-9]{1,5}$",
        description="host:port published instead of the instance's own; empty: its own",
    )


def calls_group(service: str) -> str:
    """The live settings group holding the policy of a client of ``service``."""
    return "calls_" + re.sub(r"[^A-Za-z0-9_]", "_", service)[:56]


def _name_of(job: Job) -> str:
    return str(getattr(job, "__name__", None) or type(job).__name__)
