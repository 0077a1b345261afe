"""The Launch routes of the local server (launch-http-api.md §1-§5, §8) as an aiohttp application.

Every request passes one middleware that records it, lets the fault injector (`faults.py`) delay,
refuse or break the answer, checks its API key, and turns our `LaunchHTTPError` (and aiohttp's
own 404/405) into FastAPI-style `{"detail": ...}` bodies. Checks run in Launch's order: a body
that is not JSON (422), auth (401), body and query validation (422), endpoint lookup (404, also
for another team's endpoint), endpoint type (400). A model's failure is never an HTTP error: sync
answers 200 with FAILURE, a stream ends with a FAILURE event; a container's 400 (`container.py`)
is Launch's HTTP 400.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Collection, Mapping
from datetime import datetime
from functools import partial
from typing import Any

from aiohttp import web

from launch_gateway.testing.local_launch.auth import Credentials, authentication_error, read_credentials
from launch_gateway.testing.local_launch.container import invalid_request_detail
from launch_gateway.testing.local_launch.endpoints import EndpointKind, EndpointRegistry, EndpointSpec
from launch_gateway.testing.local_launch.event_stream import HEADERS as SSE_HEADERS
from launch_gateway.testing.local_launch.event_stream import write_events
from launch_gateway.testing.local_launch.faults import FaultInjector, Send
from launch_gateway.testing.local_launch.invocation import ModelRunner
from launch_gateway.testing.local_launch.predict_request import (
    ErrorDetail,
    PredictRequest,
    RequestValidationError,
    json_error,
    missing,
    parse_predict_request,
)
from launch_gateway.testing.local_launch.records import RecordLog, RequestRecord
from launch_gateway.testing.local_launch.results import ResultStore
from launch_gateway.testing.local_launch.tasks import TaskQueue

RECORD = web.RequestKey("local_launch_record", RequestRecord)
TEAM = web.RequestKey("local_launch_team", str)
ENDPOINT_NOT_FOUND = "The specified endpoint could not be found."
MAX_BODY_BYTES = 64 * 1024 * 1024
_RESULTS_PREFIX = "/v1/results/"
# Which endpoint types each task route serves (ME domain/use_cases/*_inference_use_cases.py).
_SYNC_KINDS: tuple[EndpointKind, ...] = ("sync", "streaming")
_ASYNC_KINDS: tuple[EndpointKind, ...] = ("async",)
_STREAMING_KINDS: tuple[EndpointKind, ...] = ("streaming",)

# Starlette's JSONResponse writes compact JSON.
_dumps = partial(json.dumps, separators=(",", ":"))
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class LaunchHTTPError(Exception):
    """A request Launch refuses: answered with `status` and `{"detail": detail}`."""

    def __init__(self, status: int, detail: Any, headers: dict[str, str] | None = None) -> None:
        super().__init__(f"{status}: {detail}")
        self.status = status
        self.detail = detail
        self.headers = headers


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(body, status=status, headers=headers, dumps=_dumps)


def _lower_case_headers(request: web.Request) -> dict[str, str]:
    """All request headers by lower-cased name; repeated ones joined with ", " as HTTP allows."""
    headers: dict[str, str] = {}
    for name, value in request.headers.items():
        key = name.lower()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return headers


class LaunchApp:
    """Handlers for the Launch routes over the server's registry, runner, task queue and records."""

    def __init__(
        self,
        *,
        registry: EndpointRegistry,
        runner: ModelRunner,
        tasks: TaskQueue,
        results: ResultStore,
        records: RecordLog,
        faults: FaultInjector,
        api_keys: Collection[str],
        teams: Mapping[str, str],
        ping_interval: float,
        utcnow: Callable[[], datetime],
    ) -> None:
        self._registry = registry
        self._runner = runner
        self._tasks = tasks
        self._results = results
        self._records = records
        self._faults = faults
        self._api_keys = frozenset(api_keys)
        self._teams = dict(teams)
        self._ping_interval = ping_interval
        self._utcnow = utcnow
        self.handlers: set[asyncio.Task[Any]] = set()  # in flight, so stop() can cancel streams

    def application(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware], client_max_size=MAX_BODY_BYTES)
        app.router.add_get("/v1/model-endpoints", self.list_endpoints)
        app.router.add_get("/v1/model-endpoints/{endpoint_id}", self.get_endpoint)
        app.router.add_post("/v1/sync-tasks", self.sync_task)
        app.router.add_post("/v1/async-tasks", self.create_async_task)
        app.router.add_get("/v1/async-tasks/{task_id}", self.get_async_task)
        app.router.add_post("/v1/streaming-tasks", self.streaming_task)
        app.router.add_get(_RESULTS_PREFIX + "{name}", self.get_result)
        return app

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Record the request, check its key, run the handler, and note how it ended."""
        credentials = read_credentials(request.headers.get("Authorization"))
        api_key = credentials.api_key
        if api_key is not None:
            request[TEAM] = self._teams.get(api_key, api_key)  # ME's fake auth: a user is their own team
        record = RequestRecord(
            method=request.method,
            path=request.path,
            query=dict(request.query),
            api_key=api_key,
            headers=_lower_case_headers(request),
            body=b"",
        )
        request[RECORD] = record
        self._records.add(record)
        task = asyncio.current_task()
        if task is not None:
            self.handlers.add(task)
        try:
            record.body = await request.read()
            response = await self._faults.answer(request, record, partial(self._answer, request, handler, credentials))
        except asyncio.CancelledError:
            record.finish("disconnected")
            raise
        except ConnectionResetError:
            record.finish("disconnected")
            raise
        except web.HTTPException as exc:
            record.finish("completed", exc.status)
            raise
        except BaseException:
            record.finish("error", 500)
            raise
        finally:
            self.handlers.discard(task)
        record.finish("completed", response.status)
        return response

    async def _answer(self, request: web.Request, handler: Handler, credentials: Credentials) -> web.StreamResponse:
        try:
            # FastAPI routes before it authenticates: an unknown route is a 404 even without a key;
            # it decodes a JSON body before too, then validates the body's fields after auth.
            routed = request.match_info.http_exception is None
            if routed and request.method == "POST":
                error = json_error(request[RECORD].body)
                if error is not None:
                    raise LaunchHTTPError(422, [error])
            if routed and not request.path.startswith(_RESULTS_PREFIX):
                refused = authentication_error(credentials, self._api_keys)
                if refused is not None:
                    detail, scheme = refused
                    raise LaunchHTTPError(401, detail, {"WWW-Authenticate": scheme})
            return await handler(request)
        except LaunchHTTPError as exc:
            return json_response({"detail": exc.detail}, exc.status, exc.headers)
        except web.HTTPException as exc:
            if exc.status in (404, 405):  # aiohttp's unmatched routes, worded as FastAPI does
                headers = {name: value for name, value in exc.headers.items() if name.lower() == "allow"}
                return json_response({"detail": exc.reason}, exc.status, headers)
            raise

    def _endpoint(self, request: web.Request, accepts: Collection[EndpointKind], serves: str) -> EndpointSpec:
        spec = self._registry.by_id(request.query["model_endpoint_id"], request.get(TEAM))
        if spec is None:
            raise LaunchHTTPError(404, ENDPOINT_NOT_FOUND)
        if spec.kind not in accepts:
            # ME tasks_v1.py prefixes the use case's EndpointUnsupportedInferenceTypeException.
            raise LaunchHTTPError(400, f"Unsupported inference type: Endpoint {spec.id} {serves}.")
        return spec

    async def _task_request(
        self, request: web.Request, accepts: Collection[EndpointKind], serves: str
    ) -> tuple[EndpointSpec, PredictRequest]:
        """Validate query and body together (one 422 lists both), then find the endpoint."""
        errors: list[ErrorDetail] = []
        if "model_endpoint_id" not in request.query:
            errors.append(missing(["query", "model_endpoint_id"]))
        predict: PredictRequest | None = None
        try:
            predict = parse_predict_request(request[RECORD].body)
        except RequestValidationError as exc:
            errors.extend(exc.errors)
        if errors or predict is None:
            raise LaunchHTTPError(422, errors)
        return self._endpoint(request, accepts, serves), predict

    async def list_endpoints(self, request: web.Request) -> web.StreamResponse:
        name = request.query.get("name")
        team = request.get(TEAM)
        if name is None:
            specs = self._registry.visible(team)
        else:
            spec = self._registry.by_name(name, team)
            specs = [] if spec is None else [spec]
        return json_response({"model_endpoints": [self._registry.record(spec) for spec in specs]})

    async def get_endpoint(self, request: web.Request) -> web.StreamResponse:
        endpoint_id = request.match_info["endpoint_id"]
        spec = self._registry.by_id(endpoint_id, request.get(TEAM))
        if spec is None:
            raise LaunchHTTPError(404, f"Model Endpoint {endpoint_id}  was not found.")  # two spaces, as ME says
        return json_response(self._registry.record(spec))

    async def sync_task(self, request: web.Request) -> web.StreamResponse:
        spec, predict = await self._task_request(request, _SYNC_KINDS, "does not serve sync tasks")
        outcome = await self._runner.run(spec, predict)
        container = outcome.container_error
        if container is not None and container.status_code == 400:
            raise LaunchHTTPError(400, invalid_request_detail(container.body))
        return json_response(outcome.sync_body())

    async def create_async_task(self, request: web.Request) -> web.StreamResponse:
        spec, predict = await self._task_request(request, _ASYNC_KINDS, "is not an async endpoint")
        owner = spec.owner or request.get(TEAM) or "local-launch"
        return json_response({"task_id": self._tasks.submit(spec, predict, owner)})

    async def get_async_task(self, request: web.Request) -> web.StreamResponse:
        return json_response(self._tasks.response(request.match_info["task_id"]))

    async def streaming_task(self, request: web.Request) -> web.StreamResponse:
        spec, predict = await self._task_request(request, _STREAMING_KINDS, "is not a streaming endpoint")
        record = request[RECORD]
        response = web.StreamResponse(status=200, headers=SSE_HEADERS)
        try:
            await response.prepare(request)
            record.set_status(200)

            async def write(send: Send | None) -> None:
                await write_events(
                    response,
                    partial(self._runner.open_events, spec, predict),
                    ping_interval=self._ping_interval,
                    utcnow=self._utcnow,
                    send=send,
                )

            await self._faults.run_stream(request, response, record, write)
        except ConnectionResetError:
            # The client left between events; aiohttp ignores the failed end of the response.
            record.finish("disconnected")
        return response

    async def get_result(self, request: web.Request) -> web.StreamResponse:
        data = self._results.get(request.match_info["name"])
        if data is None:
            raise LaunchHTTPError(404, "Not Found")
        return web.Response(body=data, content_type="application/octet-stream")
