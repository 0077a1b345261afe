"""The EndpointService servicer: one method per RPC, each translating and calling one route.

Predict, SubmitAsync, StreamPredict and GetEndpoint resolve their endpoint by name first;
GetAsyncTask and WaitAsyncTask look a task up by its id (the signed handle names the endpoint
the tenant's checks use), and ListEndpoints lists what the caller may call. Data flows one way:
servicer -> translate -> upstream, and back. The servicer decides what the RPCs mean (which
endpoint kinds each accepts, how long a call may take, when a cached endpoint is stale);
`translate` shapes bodies and `upstream.launch_api` speaks HTTP.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc

from launch_gateway.server.access.credentials import Credential
from launch_gateway.server.access.handles import TaskRef
from launch_gateway.server.access.tenants import Subject
from launch_gateway.server.admission import Admission, Caller, Edge, Gate
from launch_gateway.server.clock import Clock
from launch_gateway.server.errors import (
    DeadlineExceeded,
    EmptyStream,
    NotFound,
    UpstreamProtocolError,
    WrongEndpointKind,
)
from launch_gateway.server.headers import Metadata, extra_headers_from, passed_through_headers
from launch_gateway.server.observability.telemetry import CallRecord, Telemetry, current_call
from launch_gateway.server.settings import Settings
from launch_gateway.server.statuses import Drain, boundary
from launch_gateway.server.upstream.endpoints import EndpointDirectory
from launch_gateway.server.upstream.launch_api import LaunchAPI, UpstreamCall
from launch_gateway.server.upstream.stream_relay import Relay
from launch_gateway.server.upstream.task_callbacks import CallbackReceiver
from launch_gateway.server.upstream.translate import (
    check_endpoint_name,
    check_task_id,
    check_upstream_task_id,
    endpoint_from_record,
    is_upstream_task_id,
    kind_name,
    raise_for_capacity,
    to_endpoint_response,
    to_upstream_body,
    wait_timeout_from,
)
from launch_gateway.server.upstream.waits import TaskWaits
from launch_gateway.v1 import endpoint_service_pb2 as pb
from launch_gateway.v1 import endpoint_service_pb2_grpc as pb_grpc

T = TypeVar("T")
Context = grpc.aio.ServicerContext[Any, Any]

# The RPC that serves each endpoint kind, for FAILED_PRECONDITION messages.
_RPC_FOR_KIND = {
    pb.ENDPOINT_KIND_SYNC: "Predict",
    pb.ENDPOINT_KIND_ASYNC: "SubmitAsync",
    pb.ENDPOINT_KIND_STREAMING: "StreamPredict",
}
# Launch's sync route also serves streaming endpoints (launch-http-api.md §1).
_PREDICT_KINDS = frozenset({pb.ENDPOINT_KIND_SYNC, pb.ENDPOINT_KIND_STREAMING})
_ASYNC_KINDS = frozenset({pb.ENDPOINT_KIND_ASYNC})
_STREAM_KINDS = frozenset({pb.ENDPOINT_KIND_STREAMING})


@dataclass(frozen=True)
class Scope:
    """One admitted RPC: the edge config it started with, its caller, and its upstream call settings."""

    edge: Edge
    caller: Caller
    call: UpstreamCall
    task: TaskRef | None = None

    @property
    def credential(self) -> Credential:
        return self.caller.credential

    def task_call(self, request: pb.EndpointRequest) -> UpstreamCall:
        """The upstream call of a task route: this RPC's, with the request's checked `extra_headers`
        (none of which can be one the gateway sets: `headers.DENIED_EXTRA_HEADERS`)."""
        if not request.extra_headers:
            return self.call
        extra = extra_headers_from(request.extra_headers)
        return dataclasses.replace(self.call, headers={**extra, **self.call.headers})


# Where grpc's auth context puts each type of client certificate name (access.tenants.SUBJECT_TYPES).
_SUBJECT_PROPERTIES = {
    "dns": "peer_dns",
    "uri": "peer_uri",
    "email": "peer_email",
    "ip": "peer_ip",
    "cn": "x509_common_name",
}


def peer_subjects(context: Context) -> list[Subject]:
    """The client certificate's names by type, (type, name) (mTLS); empty without one."""
    auth = context.auth_context()
    return [
        (kind, name.decode(errors="replace") if isinstance(name, bytes) else str(name))
        for kind, prop in _SUBJECT_PROPERTIES.items()
        for name in auth.get(prop, ())
    ]


class EndpointService(pb_grpc.EndpointServiceServicer):
    """Serves launch_gateway.v1.EndpointService against one Launch API."""

    def __init__(
        self,
        settings: Settings,
        api: LaunchAPI,
        gate: Gate,
        edges: Callable[[], Edge],
        directory: EndpointDirectory,
        waits: TaskWaits,
        telemetry: Telemetry,
        drain: Drain,
        clock: Clock,
        receiver: CallbackReceiver | None = None,
    ) -> None:
        self.telemetry = telemetry
        self._receiver = receiver
        self.drain = drain
        self._clock = clock
        self._timeouts = settings.timeouts
        self._api = api
        self._gate = gate
        self._edges = edges
        self._directory = directory
        self._waits = waits

    # --- per-call plumbing ---------------------------------------------------------------

    def _usable(self, remaining: float) -> float:
        """Of the seconds the caller's deadline leaves, those we may spend and still answer in time.

        Besides `deadline_margin`, 1 % is kept back: grpc-core sends a timeout rounded up to at most
        three significant digits (a 12 s deadline arrives as 12.1 s), so the server sees up to 1 %
        more time than the caller has.
        """
        return remaining * 0.99 - self._timeouts.deadline_margin

    def _budget(self, context: Context, default: float) -> float:
        """Seconds an upstream request may take: the default, cut to the caller's deadline."""
        remaining = context.time_remaining()
        if remaining is None:
            return default
        budget = min(default, self._usable(remaining))
        if budget <= 0:
            raise DeadlineExceeded(
                "the call's deadline leaves no time for the upstream request", reason="DEADLINE_TOO_SHORT"
            )
        return budget

    def _admit(
        self,
        context: Context,
        default_timeout: float,
        endpoint: str | None = None,
        task_id: str | None = None,
        listing: bool = False,
    ) -> _Admitted:
        """Admit the RPC (identify, authorize, limit: see `admission`), and give back its slot at the end.

        Endpoint RPCs pass `endpoint`; task RPCs pass `task_id`, whose handle names the endpoint and
        the tenant; `listing` RPCs name no endpoint, and filter what they show by the tenant's
        (`Gate.allowed`). The concurrency kind is the one the RPC's boundary declared.
        """
        return _Admitted(functools.partial(self._enter, context, default_timeout, endpoint, task_id, listing))

    async def _enter(
        self, context: Context, default_timeout: float, endpoint: str | None, task_id: str | None, listing: bool
    ) -> tuple[Scope, Admission]:
        """`_admit`'s steps, in order; the slot is given back here if a later step fails."""
        edge = self._edges()
        record = current_call()
        assert record is not None, "every RPC runs inside its boundary, which opens the record"
        metadata = record.metadata  # read once, by the boundary
        caller = self._identify(edge, metadata, context, record)
        task = self._task(edge, caller, task_id) if task_id is not None else None
        endpoint = None if listing else self._authorize(caller, _target(endpoint, task), record)
        admission = await self._gate.limit(caller, endpoint, record.kind)
        try:
            call = await self._start(context, metadata, caller, record, admission, default_timeout)
        except BaseException:
            admission.release()
            raise
        record.metadata = None  # read: not kept for the call's life (a wait's may last minutes)
        return Scope(edge, caller, call, task), admission

    def _identify(self, edge: Edge, metadata: Metadata | None, context: Context, record: CallRecord) -> Caller:
        """Who is calling: a key, or a client certificate when some tenant is known by one."""
        subjects = peer_subjects(context) if edge.tenants.has_subjects else ()
        caller = self._gate.identify(edge, metadata, subjects)
        record.tenant = caller.name
        record.identified = True
        return caller

    @staticmethod
    def _task(edge: Edge, caller: Caller, task_id: str) -> TaskRef:
        """The task a handle names; another tenant's handle is NOT_FOUND, so its existence is not revealed."""
        check_task_id(task_id)
        task = edge.handles.verify(task_id) if edge.handles else TaskRef("", "", task_id)
        if task.tenant != caller.name:
            raise NotFound("task not found", reason="TASK_NOT_FOUND")
        check_upstream_task_id(task.upstream_id)  # in open mode the caller's own: it goes into the URL path
        return task

    def _authorize(self, caller: Caller, endpoint: str | None, record: CallRecord) -> str | None:
        """May the caller call this endpoint (None: a task whose handle names none)."""
        if endpoint:
            record.endpoint = self.telemetry.endpoint_label(endpoint)
            self._gate.authorize(caller, endpoint)
        return endpoint

    async def _start(
        self,
        context: Context,
        metadata: Metadata | None,
        caller: Caller,
        record: CallRecord,
        admission: Admission,
        default_timeout: float,
    ) -> UpstreamCall:
        """Tell the caller its request id and rate-limit headers, and set up the upstream requests.

        A unary answer carries them in its trailers, sent with the status in the write that sends the
        answer: grpc.aio cannot add metadata to the initial metadata it sends itself with a unary answer,
        and sending them apart costs a frame and a syscall per call. A stream sends them at once in its
        initial metadata, so the caller has them before the first event.
        """
        record.reply_headers = admission.headers
        told = (("x-request-id", record.request_id), *admission.headers)
        if record.kind == "stream":
            await context.send_initial_metadata(told)
        else:
            context.set_trailing_metadata(told)
        headers = {**passed_through_headers(metadata), "x-request-id": record.request_id}
        budget = self._budget(context, default_timeout)
        return UpstreamCall(caller.credential.authorization, budget, headers, own_timeout=budget >= default_timeout)

    async def _on_endpoint(
        self,
        rpc: str,
        name: str,
        kinds: frozenset[pb.EndpointKind.ValueType],
        scope: Scope,
        use: Callable[[pb.Endpoint], Awaitable[T]],
    ) -> T:
        """Resolve `name`, check its kind, and run `use` on it.

        A task route's 404 means the cached record is stale (the endpoint was deleted or
        re-created): the entry is dropped and, when a fresh lookup gives a new id, `use` runs once
        more. Nothing was created upstream by a 404, so repeating is safe for every route.
        """
        endpoint = await self._directory.resolve(name, scope.call, scope.credential.scope)
        for attempt in range(2):
            if endpoint.kind not in kinds:
                right = _RPC_FOR_KIND.get(endpoint.kind)
                hint = f"; call it with {right}" if right else ""
                kind = kind_name(endpoint.kind)
                article = "an" if kind[0] in "aeiou" else "a"
                raise WrongEndpointKind(
                    f"{rpc} cannot call endpoint {name!r}: it is {article} {kind} endpoint{hint}",
                    metadata={"endpoint_kind": kind, **({"use_rpc": right} if right else {})},
                )
            try:
                return await use(endpoint)
            except NotFound:
                if attempt:
                    raise
                self._directory.forget(name, scope.credential.scope)
                fresh = await self._directory.resolve(name, scope.call, scope.credential.scope)
                if fresh.id == endpoint.id:
                    raise
                endpoint = fresh
        raise AssertionError("unreachable")  # pragma: no cover

    # --- RPCs ----------------------------------------------------------------------------

    @boundary("unary")
    async def Predict(self, request: pb.PredictRequest, context: Context) -> pb.PredictResponse:
        async with self._admit(context, self._timeouts.sync, endpoint=request.endpoint_name) as scope:

            async def predict(endpoint: pb.Endpoint) -> Any:
                body = to_upstream_body(request.request, endpoint.kind)
                return await self._api.sync_predict(endpoint.id, body, scope.task_call(request.request))

            payload = await self._on_endpoint("Predict", request.endpoint_name, _PREDICT_KINDS, scope, predict)
        response = raise_for_capacity(to_endpoint_response(payload), request.endpoint_name)
        return pb.PredictResponse(response=response)

    @boundary("unary")
    async def SubmitAsync(self, request: pb.SubmitAsyncRequest, context: Context) -> pb.SubmitAsyncResponse:
        name = request.endpoint_name
        async with self._admit(context, self._timeouts.submit, endpoint=name) as scope:

            async def submit(endpoint: pb.Endpoint) -> str:
                given = request.request.callback_url if request.request.HasField("callback_url") else None
                body = to_upstream_body(request.request, endpoint.kind, self._own_callback_url(scope, name, given))
                if given is not None:
                    await self._gate.check_callback(scope.caller.tenant, given)
                return await self._api.submit_async(endpoint.id, body, scope.task_call(request.request))

            upstream_id = await self._on_endpoint("SubmitAsync", name, _ASYNC_KINDS, scope, submit)
            if not is_upstream_task_id(upstream_id):  # it could not be polled
                raise UpstreamProtocolError("upstream POST /v1/async-tasks answered a task_id that is not one")
            handles = scope.edge.handles
            task_id = handles.issue(TaskRef(scope.caller.name, name, upstream_id)) if handles else upstream_id
        return pb.SubmitAsyncResponse(task_id=task_id)

    def _own_callback_url(self, scope: Scope, name: str, given: str | None) -> str | None:
        """The receiver's callback URL to give Launch in place of the caller's (`upstream.task_callbacks`),
        or None: no receiver, no callback hook on the endpoint, or the endpoint's own default callback."""
        if self._receiver is None:
            return None
        hooks = self._directory.hooks(name, scope.credential.scope)
        if not hooks.callback or (given is None and hooks.default_callback):
            return None
        return self._receiver.url_for(self._receiver.grant(scope.caller.name, name, given or ""))

    async def _poll(self, task_id: str, upstream_id: str, call: UpstreamCall) -> pb.EndpointResponse:
        payload = await self._api.get_task(upstream_id, call)
        return to_endpoint_response(payload, task_id=task_id)

    @boundary("unary")
    async def GetAsyncTask(self, request: pb.GetAsyncTaskRequest, context: Context) -> pb.GetAsyncTaskResponse:
        async with self._admit(context, self._timeouts.poll, task_id=request.task_id) as scope:
            assert scope.task is not None
            response = await self._poll(request.task_id, scope.task.upstream_id, scope.call)
        # Checked here, not in the poll: a wait's loop would take the error for a transient one and poll on.
        return pb.GetAsyncTaskResponse(response=raise_for_capacity(response, scope.task.endpoint))

    @boundary("wait")
    async def WaitAsyncTask(self, request: pb.WaitAsyncTaskRequest, context: Context) -> pb.WaitAsyncTaskResponse:
        wait = self._timeouts.max_wait
        requested = wait_timeout_from(request.timeout if request.HasField("timeout") else None)
        if requested is not None:
            wait = min(wait, requested)
        remaining = context.time_remaining()
        deadline = None if remaining is None else self._usable(remaining)
        if deadline is not None:
            wait = min(wait, deadline)
        async with self._admit(context, self._timeouts.poll, task_id=request.task_id) as scope:
            assert scope.task is not None
            self.telemetry.metrics.waits.inc()
            started = self._clock.now()
            # The shared loop outlives any one waiter, so its polls get the poll timeout, not ours.
            poll_call = UpstreamCall(scope.call.authorization, self._timeouts.poll, scope.call.headers)
            upstream_id = scope.task.upstream_id
            response = await self._waits.wait(
                f"{scope.caller.name}/{scope.credential.scope}/{upstream_id}",
                functools.partial(self._poll, request.task_id, upstream_id, poll_call),  # lighter than a closure
                wait,
                deadline=deadline,
                task=(scope.caller.name, upstream_id),  # what Launch's callback for it wakes
            )
            self.telemetry.metrics.wait_seconds.observe(self._clock.now() - started)
        return pb.WaitAsyncTaskResponse(response=raise_for_capacity(response, scope.task.endpoint))

    # The boundary hands grpc.aio a coroutine that writes each message (statuses.boundary), a form its
    # stubs do not know: they type a streaming method as returning an iterator.
    @boundary("stream")
    async def StreamPredict(  # type: ignore[override]
        self, request: pb.StreamPredictRequest, context: Context
    ) -> AsyncIterator[pb.StreamPredictResponse]:
        name = request.endpoint_name
        started = self._clock.now()
        async with self._admit(context, self._timeouts.stream_idle, endpoint=name) as scope:

            async def open_stream(
                endpoint: pb.Endpoint,
            ) -> tuple[AsyncGenerator[list[bytes], None], list[bytes] | None]:
                body = to_upstream_body(request.request, endpoint.kind)
                events = self._api.stream(endpoint.id, body, scope.task_call(request.request))
                # Read the first event here, so a 404 on opening still takes the stale-cache path.
                try:
                    return events, await anext(events, None)
                except BaseException:
                    await events.aclose()
                    raise

            events, first = await self._on_endpoint("StreamPredict", name, _STREAM_KINDS, scope, open_stream)
            if first is None:
                await events.aclose()
                raise EmptyStream(
                    "upstream POST /v1/streaming-tasks ended the stream without an event: Launch answers 200 "
                    "text/event-stream before it calls the model, so when the model's pod refuses the request "
                    "(HTTP 400, e.g. an input it rejects) Launch cannot send an error status and ends the stream "
                    "empty; check the request against the model",
                )
            to_message = functools.partial(_stream_message, endpoint=name)
            # From here on the relay owns the upstream stream: its reader alone reads it and closes it.
            messages = Relay(events, to_message)
            label = self.telemetry.endpoint_label(name)
            metrics = self.telemetry.metrics
            relayed = 0  # counted in batches: a metric update per event is a measurable cost
            events_counter = metrics.child(metrics.stream_events, label)
            try:
                metrics.child(metrics.first_event, label).observe(self._clock.now() - started)
                for data in first:
                    relayed += 1
                    yield to_message(data)
                async for batch in messages:
                    for message in batch:
                        relayed += 1
                        if relayed >= 256:
                            events_counter.inc(relayed)
                            relayed = 0
                        yield message
            finally:
                events_counter.inc(relayed)
                await messages.aclose()

    @boundary("unary")
    async def GetEndpoint(self, request: pb.GetEndpointRequest, context: Context) -> pb.GetEndpointResponse:
        name = request.endpoint_name
        async with self._admit(context, self._timeouts.poll, endpoint=name) as scope:
            endpoint = await self._directory.resolve(name, scope.call, scope.credential.scope)
        return pb.GetEndpointResponse(endpoint=endpoint)

    @boundary("unary")
    async def ListEndpoints(self, request: pb.ListEndpointsRequest, context: Context) -> pb.ListEndpointsResponse:
        async with self._admit(context, self._timeouts.poll, listing=True) as scope:
            records = await self._api.list_endpoints(scope.call)
        endpoints = self._gate.allowed(scope.caller, [endpoint_from_record(r) for r in records], lambda e: e.name)
        return pb.ListEndpointsResponse(endpoints=endpoints)


class _Admitted:
    """`EndpointService._admit`'s context manager: the RPC's Scope in the block, its slot given back after.

    A class, not an async generator: ~1 KB less per call in flight (a wait's may last minutes).
    """

    __slots__ = ("_admission", "_enter")

    def __init__(self, enter: Callable[[], Awaitable[tuple[Scope, Admission]]]) -> None:
        self._enter: Callable[[], Awaitable[tuple[Scope, Admission]]] | None = enter
        self._admission: Admission | None = None

    async def __aenter__(self) -> Scope:
        assert self._enter is not None, "entered once"
        enter, self._enter = self._enter, None
        scope, self._admission = await enter()
        return scope

    async def __aexit__(self, *exc_info: object) -> None:
        if self._admission is not None:
            self._admission.release()
            self._admission = None


def _target(endpoint: str | None, task: TaskRef | None) -> str | None:
    """The endpoint an RPC calls: named by the request, or by the task's handle (None if it names none)."""
    if task is not None:
        return task.endpoint or None
    return check_endpoint_name(endpoint or "")


def _stream_message(data: bytes, endpoint: str) -> pb.StreamPredictResponse:
    """One event as a message; Launch's capacity FAILURE event ends the stream with its error instead."""
    try:
        payload = json.loads(data)
    except ValueError as exc:
        raise UpstreamProtocolError(f"upstream stream sent an event whose data is not JSON: {exc}") from exc
    message = pb.StreamPredictResponse()  # filled in place: building the response apart would copy it
    raise_for_capacity(to_endpoint_response(payload, streaming=True, into=message.response), endpoint)
    return message
