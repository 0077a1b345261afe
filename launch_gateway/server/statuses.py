"""The one place where our errors become RPC statuses.

Each RPC handler is wrapped by `boundary(kind)`, which also measures the call
(`observability.telemetry`: metrics and the access log, counted when the call ends however it ends)
and returns the request id in the trailers of errors. A `GatewayError` ends the call with its code
and message, plus rich details (grpcio-status, `details_of`): a `google.rpc.ErrorInfo` with the
error's stable reason always, a `google.rpc.BadRequest` for INVALID_ARGUMENT, and a
`google.rpc.RetryInfo` with a `retry-after` trailer when the caller should wait.
Anything else is a bug: it is logged with its traceback and the caller sees
INTERNAL with no internals. Nothing else in the gateway calls `context.abort`.
With tracing on, the boundary also opens and ends the RPC's server span (`observability.tracing`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Literal, NoReturn, Protocol, TypeVar, overload

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import DecodeError, Message
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from launch_gateway.server.clock import Clock
from launch_gateway.server.errors import Code, GatewayError, Internal, InvalidArgument, ShuttingDown
from launch_gateway.server.headers import metadata_value
from launch_gateway.server.limits.concurrency import Kind
from launch_gateway.server.observability.telemetry import CallRecord, Telemetry

log = logging.getLogger("launch_gateway")

# google.rpc.ErrorInfo.domain (AIP-193: the service's DNS name). A name for this gateway, not a host it
# serves: clients match (domain, reason), and neither changes between releases.
ERROR_DOMAIN = "launch-gateway.dev"

Req = TypeVar("Req")
Resp = TypeVar("Resp")


def status_of(error: GatewayError) -> grpc.Status:
    """The RPC status for an error: its code and message, its rich details, and trailers.

    Details that cannot be built (a bug) are left out and logged; the status keeps its code and
    message, so a detail can never turn a refusal into UNKNOWN.
    """
    trailers: tuple[tuple[str, str], ...] = ()
    if error.retry_after is not None:
        trailers = (("retry-after", str(math.ceil(max(error.retry_after, 0.0)))),)
    try:
        message = status_pb2.Status(code=int(error.code), message=error.message, details=details_of(error))
        status: grpc.Status = rpc_status.to_status(message)
    except Exception:
        log.exception("cannot build the rich details of %r; sending the status without them", error)
        text = error.message.encode("utf-8", "replace").decode("utf-8")
        return _WithTrailers(grpc.StatusCode[error.code.name], text, trailers)
    return _WithTrailers(status.code, status.details, (*status.trailing_metadata, *trailers))


def details_of(error: GatewayError) -> list[any_pb2.Any]:
    """An error's rich details (AIP-193): always a google.rpc.ErrorInfo (the error's reason and
    metadata, with the upstream HTTP status when there was one, in `ERROR_DOMAIN`); for
    INVALID_ARGUMENT a google.rpc.BadRequest naming the field; with a retry delay a google.rpc.RetryInfo."""
    metadata = dict(error.metadata)
    if error.http_status is not None:
        metadata["http_status"] = str(error.http_status)
    details = [_packed(error_details_pb2.ErrorInfo(reason=error.reason, domain=ERROR_DOMAIN, metadata=metadata))]
    if isinstance(error, InvalidArgument):
        violation = error_details_pb2.BadRequest.FieldViolation(field=error.field, description=error.description)
        details.append(_packed(error_details_pb2.BadRequest(field_violations=[violation])))
    if error.retry_after is not None:
        seconds = max(error.retry_after, 0.0)
        whole = math.floor(seconds)
        delay = duration_pb2.Duration(seconds=whole, nanos=int((seconds - whole) * 1e9))
        details.append(_packed(error_details_pb2.RetryInfo(retry_delay=delay)))
    return details


class _WithTrailers(grpc.Status):
    def __init__(self, code: grpc.StatusCode, details: str, trailing_metadata: tuple[Any, ...]) -> None:
        self.code = code
        self.details = details
        self.trailing_metadata = trailing_metadata


def _packed(message: Any) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


async def abort(context: grpc.aio.ServicerContext[Any, Any], error: GatewayError, record: CallRecord) -> NoReturn:
    """End the call with the error's status; its trailers carry the request id and the reply headers too."""
    status = status_of(error)
    trailers = (*status.trailing_metadata, ("x-request-id", record.request_id), *record.reply_headers)
    await context.abort(status.code, status.details, trailing_metadata=trailers)
    raise AssertionError("context.abort returned")  # pragma: no cover


def _internal(handler_name: str, exc: BaseException) -> GatewayError:
    log.error("unexpected error in %s", handler_name, exc_info=exc)
    return Internal("internal error in the gateway")


class Undecodable:
    """A request whose bytes do not parse (corrupt wire format, invalid UTF-8 in a string).

    The server's deserializers return this instead of raising, so the boundary can answer
    INVALID_ARGUMENT rather than grpc's UNKNOWN "Unexpected DecodeError".
    """

    def __init__(self, message_type: str, reason: str) -> None:
        self.error = InvalidArgument("request", f"not a valid {message_type} ({reason})", reason="REQUEST_UNDECODABLE")


def tolerant_deserializer(message_class: type[Message]) -> Callable[[bytes], Any]:
    """`message_class.FromString`, returning `Undecodable` instead of raising."""
    name = message_class.DESCRIPTOR.full_name

    def parse(data: bytes) -> Any:
        try:
            return message_class.FromString(data)
        except DecodeError as exc:
            return Undecodable(name, str(exc).rsplit(": ", 1)[-1])

    return parse


class Drain:
    """The RPCs in flight, so that a shutdown can refuse new ones and end the open ones cleanly.

    While draining, new RPCs are refused with UNAVAILABLE (clients retry that on another replica),
    unary calls in flight run to their end, waits answer the last status they have seen at once (`ending`:
    WaitAsyncTask's answer when its time runs out, and it may last up to `timeouts.max_wait`), and open
    streams are ended with UNAVAILABLE when the grace period is nearly over, so that every call gets a
    status rather than a cut connection.
    """

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self.unary: set[asyncio.Task[Any]] = set()
        self.streams: set[asyncio.Task[Any]] = set()
        self._changed = asyncio.Event()
        self.ending = asyncio.Event()  # set when the drain begins: waits end then

    @property
    def draining(self) -> bool:
        return self.ending.is_set()

    def begin(self) -> None:
        """Refuse new RPCs from now on, and end the waits in flight with their last status."""
        self.ending.set()

    def enter(self, task: asyncio.Task[Any] | None, stream: bool) -> None:
        if task is not None:
            (self.streams if stream else self.unary).add(task)

    def leave(self, task: asyncio.Task[Any] | None) -> None:
        if task is not None:
            self.unary.discard(task)
            self.streams.discard(task)
            self._changed.set()

    async def wait_until_idle(self, within: float) -> bool:
        """Wait until no call is in flight; False on timeout."""
        deadline = self._clock.now() + within
        while self.unary or self.streams:
            self._changed.clear()
            remaining = deadline - self._clock.now()
            if remaining <= 0:
                return False
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except TimeoutError:
                return False
        return True

    def end_streams(self) -> None:
        """Cancel every open stream; each ends with UNAVAILABLE ("shutting down")."""
        for task in list(self.streams):
            task.cancel("drain")


class Observed(Protocol):
    """What a servicer offers the boundary."""

    telemetry: Telemetry
    drain: Drain


Svc = TypeVar("Svc", bound=Observed)
UnaryHandler = Callable[[Svc, Req, grpc.aio.ServicerContext[Req, Resp]], Awaitable[Resp]]
StreamHandler = Callable[[Svc, Req, grpc.aio.ServicerContext[Req, Resp]], AsyncIterator[Resp]]
# What grpc.aio is given for a stream: a coroutine that writes each message (see `boundary`).
StreamWriter = Callable[[Svc, Req, grpc.aio.ServicerContext[Req, Resp]], Awaitable[None]]


class _CallEnded(Exception):
    """A stream's write failed: grpc-core has already ended the call (the caller cancelled or its
    deadline passed), and cancels the handler's task a moment later. No status can be sent."""


class _Guarded:
    """One RPC inside its boundary: opened, refused while draining or undecodable, measured when it
    ends however it ends, and every failure turned into its status. The one mechanism for every kind.

    A class, not an async generator: the generator, its manager and the loop's record of it were
    ~1 KB per call in flight, and a wait can be in flight for minutes.
    """

    __slots__ = ("_context", "_kind", "_method", "_record", "_request", "_span", "_svc", "_task")

    def __init__(
        self, svc: Observed, method: str, kind: Kind, request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> None:
        self._svc = svc
        self._method = method
        self._kind = kind
        self._request = request
        self._context = context

    async def __aenter__(self) -> CallRecord:
        svc = self._svc
        metadata = self._context.invocation_metadata()
        record = self._record = svc.telemetry.begin(self._method, self._kind, metadata_value(metadata, "x-request-id"))
        record.metadata = metadata  # admission reads it there, once, and lets it go
        tracing = svc.telemetry.tracing
        self._span = tracing.server_span(self._method, metadata) if tracing is not None else None  # None: off
        self._task = asyncio.current_task()
        svc.drain.enter(self._task, stream=self._kind == "stream")
        request, self._request = self._request, None  # not held for the call's life
        try:
            if svc.drain.draining:
                raise ShuttingDown()
            if isinstance(request, Undecodable):
                raise request.error
        except BaseException as exc:
            await self._end(exc)
            raise  # pragma: no cover - _end always raises for an exception
        return record

    async def __aexit__(self, _type: object, exc: BaseException | None, _tb: object) -> None:
        await self._end(exc)

    async def _end(self, exc: BaseException | None) -> None:
        """End the call: its status from `exc` (None: OK), then its measures, whatever happens."""
        svc, record, task, context = self._svc, self._record, self._task, self._context
        code = Code.OK
        try:
            if exc is not None:
                raise exc
        except GatewayError as error:
            code = error.code
            record.error_class = error.error_class
            await abort(context, error, record)
        except _CallEnded:
            code = Code.CANCELLED
            raise asyncio.CancelledError from None  # what grpc would have sent this task a moment later
        except asyncio.CancelledError:
            if self._kind != "stream" or not svc.drain.draining or task is None:
                code = Code.CANCELLED
                raise
            task.uncancel()  # our own cancellation of an open stream: the caller is still there and gets a status
            shutting = ShuttingDown()
            code = shutting.code
            record.error_class = shutting.error_class
            await abort(context, shutting, record)
        except Exception as bug:
            code = Code.INTERNAL
            await abort(context, _internal(self._method, bug), record)
        finally:
            svc.drain.leave(task)
            record.finish(code)
            if self._span is not None:
                self._span.end(code)


@overload
def boundary(
    kind: Literal["unary", "wait"],
) -> Callable[[UnaryHandler[Svc, Req, Resp]], UnaryHandler[Svc, Req, Resp]]: ...


@overload
def boundary(
    kind: Literal["stream"],
) -> Callable[[StreamHandler[Svc, Req, Resp]], StreamWriter[Svc, Req, Resp]]: ...


def boundary(kind: Kind) -> Callable[[Any], Any]:
    """Wrap an RPC handler of this concurrency kind ("unary", "wait" or "stream", said here and
    nowhere else): every failure leaves as a proper status and the call is measured. Messages a
    stream has sent stand, then its status.

    A stream handler is an async generator, but grpc.aio is handed a coroutine that writes what it
    yields (`context.write`), so the caller's cancellation always lands in this task, inside the
    boundary, and is recorded CANCELLED. (grpc would iterate a generator itself; cancelled while
    writing, it leaves the generator to the garbage collector, which closes it later in a task of
    its own, where the call was counted OK.) The handler's generator is closed here, by its owner.
    """

    def wrap(handler: Any) -> Any:
        method = handler.__name__
        if kind == "stream":

            @functools.wraps(handler)
            async def stream(svc: Svc, request: Req, context: grpc.aio.ServicerContext[Req, Resp]) -> None:
                async with _Guarded(svc, method, kind, request, context) as record:
                    sent = 0
                    try:
                        async with contextlib.aclosing(handler(svc, request, context)) as messages:
                            async for message in messages:
                                try:
                                    await context.write(message)
                                except grpc.aio.InternalError as exc:  # grpc-core refused the write
                                    raise _CallEnded() from exc
                                sent += 1
                                if sent == 256:  # counted in batches: a metric update per message is a measurable cost
                                    record.sent(sent)
                                    sent = 0
                    finally:
                        record.sent(sent)

            return stream

        @functools.wraps(handler)
        async def unary(svc: Svc, request: Req, context: grpc.aio.ServicerContext[Req, Resp]) -> Resp:
            async with _Guarded(svc, method, kind, request, context) as record:
                response: Resp = await handler(svc, request, context)
                record.meter.sent()
                return response

        return unary

    return wrap
