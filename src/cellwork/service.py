"""``Service``: one instance of a cellwork service and its lifecycle.

A service module builds one in its composition root and hands it to the
runtime (``cellwork serve MODULE`` calls ``MODULE.create_service(settings)``)::

    def create_service(settings: ServiceSettings) -> Service:
        service = Service("echo", settings)
        service.add_grpc(add_EchoServicer_to_server, EchoServicer(), "pkg.v1.Echo")
        return service

Lifecycle (shared by every long-lived part): ``start()`` connects NATS, serves
gRPC and metrics, runs start hooks, registers SERVING and heartbeats;
``drain(timeout)`` publishes DRAINING, waits for clients to notice, stops
taking calls and finishes in-flight ones, runs stop hooks, deregisters;
``close()`` releases what is left. Nothing connects at construction time.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import replace
from typing import TYPE_CHECKING, Any, TypeVar
from wsgiref.simple_server import WSGIServer

from grpc import aio
from nats.aio.client import Client as NatsClient
from nats.js.client import JetStreamContext

from cellwork.config.settings import ServiceSettings
from cellwork.discovery.instance import InstanceInfo, InstanceStatus
from cellwork.discovery.registry import Registration, Registry
from cellwork.events.connection import connect_nats
from cellwork.events.consumer import Consumer, Handler
from cellwork.events.publisher import Publisher
from cellwork.events.streams import StreamSpec, ensure_streams
from cellwork.observability.logging import get_logger
from cellwork.observability.metrics import start_metrics_server
from cellwork.rpc.client import Client, connect_client
from cellwork.rpc.interceptors import Layer
from cellwork.rpc.server import RegisterFn, RpcServer

if TYPE_CHECKING:  # the HTTP edge (uvicorn, starlette) loads only in services that serve HTTP
    from starlette.types import ASGIApp

    from cellwork.gateway.http import HttpServer

StubT = TypeVar("StubT")
Hook = Callable[["Service"], Awaitable[None]]
Job = Callable[["Service"], Coroutine[Any, Any, None]]

_log = get_logger("cellwork.service")


class Service:
    """One running instance: gRPC server, registry entry, metrics, clients, hooks."""

    def __init__(self, name: str, settings: ServiceSettings | None = None) -> None:
        self.settings = settings or ServiceSettings()
        # The name the cell (or deployment) gives the service wins over the module's own.
        self.name = self.settings.service or name
        self.layers: list[Layer] = []
        self._servicers: list[tuple[RegisterFn, Any, str]] = []
        self._on_start: list[Hook] = []
        self._on_stop: list[Hook] = []
        self._clients: list[Client[Any]] = []
        self.server: RpcServer | None = None
        self.nats: NatsClient | None = None
        self.registry: Registry | None = None
        self.registration: Registration | None = None
        self.metrics_port = 0
        self._metrics_server: WSGIServer | None = None
        self.stopped = asyncio.Event()
        self.streams: list[StreamSpec] = []
        self._consumer_specs: list[tuple[Handler, dict[str, Any]]] = []
        self.consumers: list[Consumer] = []
        self.publisher: Publisher | None = None
        self._http_specs: list[tuple[ASGIApp, int, dict[str, Any]]] = []
        self.http_servers: list[HttpServer] = []
        self._jobs: list[Job] = []
        self._on_reconnect: list[Hook] = []
        self._job_tasks: list[asyncio.Task[None]] = []

    # -- declaring ---------------------------------------------------------------

    def add_grpc(self, register: RegisterFn, servicer: Any, full_name: str) -> None:
        """Serve ``servicer`` (registered with its generated ``add_*_to_server``)."""
        self._servicers.append((register, servicer, full_name))

    def add_streams(self, *specs: StreamSpec) -> None:
        """Ensure these JetStream streams exist (created or updated) on start."""
        self.streams.extend(specs)

    def consume(
        self, *, stream: str, durable: str, subject: str, **options: Any
    ) -> Callable[[Handler], Handler]:
        """Declare an event handler on a durable consumer (a group across instances).

        The handler's return acks the message; raising redelivers it, up to
        ``max_deliver`` times, then dead-letters it. Options go to ``Consumer``.
        """

        def register(handler: Handler) -> Handler:
            spec = {"stream": stream, "durable": durable, "subject": subject, **options}
            self._consumer_specs.append((handler, spec))
            return handler

        return register

    def add_http(self, app: ASGIApp, port: int, **options: Any) -> None:
        """Serve an ASGI app on ``port`` (shared with sibling instances via SO_REUSEPORT)."""
        self._http_specs.append((app, port, options))

    @property
    def js(self) -> JetStreamContext:
        """The JetStream context (after start)."""
        if self.nats is None:
            raise RuntimeError("JetStream is available once the service has started")
        return self.nats.jetstream()

    def on_start(self, hook: Hook) -> Hook:
        """Run ``await hook(service)`` after connecting, before registering SERVING."""
        self._on_start.append(hook)
        return hook

    def on_reconnect(self, hook: Hook) -> Hook:
        """Run ``await hook(service)`` after NATS reconnects (core messages may be lost)."""
        self._on_reconnect.append(hook)
        return hook

    async def _reconnected(self) -> None:
        _log.warning("service.nats_reconnected", service=self.name)
        for hook in self._on_reconnect:
            try:
                await hook(self)
            except Exception:
                _log.exception("service.reconnect_hook_failed", service=self.name)

    def background(self, job: Job) -> Job:
        """Run ``await job(service)`` as a task from start until drain (then cancelled)."""
        self._jobs.append(job)
        return job

    def on_stop(self, hook: Hook) -> Hook:
        """Run ``await hook(service)`` once in-flight calls are finished, on drain."""
        self._on_stop.append(hook)
        return hook

    async def client(
        self, service: str, stub_factory: Callable[[aio.Channel], StubT], **options: Any
    ) -> Client[StubT]:
        """Return a balanced client of another service; closed with this one."""
        if self.registry is None:
            raise RuntimeError("clients are created once the service has started")
        client = await connect_client(
            self.registry, service, stub_factory, caller=self.name, **options
        )
        self._clients.append(client)
        return client

    # -- lifecycle ---------------------------------------------------------------

    @property
    def info(self) -> InstanceInfo:
        """This instance's registry record."""
        if self.registration is None:
            raise RuntimeError("not registered")
        return self.registration.info

    async def start(self) -> None:
        """Connect, serve, register SERVING; raises if any step fails."""
        s = self.settings
        self.nats = await connect_nats(
            s.nats_url, name=f"{self.name}/{s.instance_id}", on_reconnected=self._reconnected
        )
        self.registry = await Registry.open(
            self.nats, s.registry_bucket, s.registry_ttl, replicas=s.stream_replicas
        )
        self._metrics_server = start_metrics_server(s.host, s.metrics_port)
        if self.streams:
            copies = tuple(replace(spec, replicas=s.stream_replicas) for spec in self.streams)
            await ensure_streams(self.js, copies)
        self.publisher = Publisher(self.js)
        self.publisher.start()
        self.metrics_port = int(self._metrics_server.server_port)
        self.server = RpcServer(
            self.name,
            host=s.host,
            port=s.grpc_port,
            layers=self.layers,
            access_log=s.access_log,
            slow_call_seconds=s.slow_call_seconds,
        )
        for register, servicer, full_name in self._servicers:
            self.server.add(register, servicer, full_name)
        port = await self.server.start()
        for hook in self._on_start:
            await hook(self)
        for job in self._jobs:
            self._job_tasks.append(asyncio.create_task(self._run_job(job)))
        for handler, spec in self._consumer_specs:
            consumer = Consumer(self.js, handler=handler, **spec)
            await consumer.start()
            self.consumers.append(consumer)
        for app, http_port, options in self._http_specs:
            from cellwork.gateway.http import HttpServer

            server = HttpServer(app, s.host, http_port, **options)
            self.http_servers.append(server)
            await server.start()
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
        self.registration = Registration(self.registry, info, s.heartbeat_interval)
        await self.registration.start()
        _log.info(
            "service.started", service=self.name, grpc_port=port, metrics_port=self.metrics_port
        )

    async def drain(self, timeout: float | None = None) -> None:
        """Stop taking calls, finish in-flight ones (up to ``timeout`` s), deregister."""
        timeout = self.settings.drain_timeout if timeout is None else timeout
        started = time.monotonic()
        _log.info("service.draining", service=self.name, timeout=timeout)
        if self.registration is not None:
            try:
                await self.registration.set_status(InstanceStatus.DRAINING)
            except Exception as exc:  # NATS gone: the TTL deregisters us anyway
                _log.warning("service.drain_publish_failed", error=str(exc))
            await asyncio.sleep(self.settings.drain_propagation)

        def left() -> float:
            return max(timeout - (time.monotonic() - started), 0.0)

        await asyncio.gather(
            *(http.drain(left()) for http in self.http_servers),
            *([self.server.drain(left())] if self.server is not None else []),
        )
        await asyncio.gather(*(consumer.drain(left()) for consumer in self.consumers))
        self.consumers = []
        await self._cancel_jobs()
        for hook in self._on_stop:
            try:
                await hook(self)
            except Exception:
                _log.exception("service.stop_hook_failed", service=self.name)
        if self.publisher is not None:
            await self.publisher.drain(max(left(), 1.0))
        if self.registration is not None:
            await self.registration.close()
            self.registration = None
        await self.close()
        _log.info(
            "service.drained", service=self.name, seconds=round(time.monotonic() - started, 3)
        )

    async def close(self) -> None:
        """Release clients, the server and NATS at once (idempotent)."""
        await self._cancel_jobs()
        for http in self.http_servers:
            await http.close()
        self.http_servers = []
        for consumer in self.consumers:
            await consumer.close()
        self.consumers = []
        if self.publisher is not None:
            await self.publisher.close()
            self.publisher = None
        for client in self._clients:
            await client.close()
        self._clients = []
        if self.server is not None:
            await self.server.close()
            self.server = None
        if self.registration is not None:
            await self.registration.close()
            self.registration = None
        if self.nats is not None:
            nc, self.nats = self.nats, None
            try:
                await asyncio.wait_for(nc.drain(), timeout=2)
            except Exception:
                await nc.close()
        if self._metrics_server is not None:
            server, self._metrics_server = self._metrics_server, None
            await asyncio.to_thread(server.shutdown)
            server.server_close()
        self.stopped.set()

    async def _run_job(self, job: Job) -> None:
        try:
            await job(self)
        except asyncio.CancelledError:
            raise
        except Exception:
            _log.exception("service.job_failed", service=self.name, job=job.__name__)

    async def _cancel_jobs(self) -> None:
        tasks, self._job_tasks = self._job_tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
