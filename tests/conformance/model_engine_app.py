"""Serve model-engine's real FastAPI app, backed by its own unit-test fakes, and a pod server of ours.

Run with the conformance venv's Python (see tests/conformance/venv.py), never with the project's:

    python tests/conformance/model_engine_app.py --source /path/to/llm-engine

It prints one JSON line, `{"app": URL, "pod": URL}`, once both servers listen on 127.0.0.1 (ports
picked by the OS), then serves until stdin closes or it is terminated.

What is model-engine's own code, imported from `--source` at run time: the app
(`model_engine_server.api.app`) with its routes, DTOs, auth (its default fake authenticates anyone:
the Basic user name is the user id and the team), use cases, the live sync, streaming and async
inference gateways, the forwarders (`inference/forwarding/forwarding.py`) and the post-inference
callback hook; and, from `model-engine/tests/unit/conftest.py`, the repositories
(`get_repositories_generator_wrapper`), the endpoint records (`model_endpoint_1` async,
`model_endpoint_2` sync, `model_endpoint_streaming`) and `FakeTaskQueueGateway`.

What is ours: the URL builders of the live gateways point at the pod server instead of a cluster's
DNS names; the pod server plays the endpoint's forwarder (using model-engine's Forwarder classes) in
front of a scriptable user container; and `ScriptedTaskQueue` adds what the fake queue lacks (STARTED,
FAILURE, a worker that runs a task through the forwarder and the callback hook as the Celery worker
does). Tests drive both through `/control/...` on the pod server.
"""

# No `from __future__ import annotations`: FastAPI reads the pod routes' annotations at run time.
import argparse
import asyncio
import collections
import importlib.util
import json
import os
import socket
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any

# --- the environment model-engine needs before its modules are imported ---------------------


def prepare_environment(source: Path) -> None:
    """Put model-engine on sys.path and set what its modules read at import time."""
    sys.path.insert(0, str(source / "model-engine"))
    os.environ.setdefault("GIT_TAG", "conformance")
    os.environ.setdefault("WORKSPACE", str(source))
    for name in ("CIRCLECI", "LOCAL"):  # they switch the inference gateways to other URL schemes
        os.environ.pop(name, None)
    if "AWS_CONFIG_FILE" not in os.environ:  # botocore fails at import without a profile
        folder = Path(tempfile.mkdtemp(prefix="model-engine-aws-"))
        (folder / "config").write_text("[default]\nregion = us-west-2\n")
        (folder / "credentials").write_text("[default]\naws_access_key_id = x\naws_secret_access_key = x\n")
        os.environ["AWS_CONFIG_FILE"] = str(folder / "config")
        os.environ["AWS_SHARED_CREDENTIALS_FILE"] = str(folder / "credentials")


def load_unit_conftest(source: Path) -> Any:
    """model-engine's tests/unit/conftest.py as a module (under its own name, not `tests`)."""
    path = source / "model-engine" / "tests" / "unit" / "conftest.py"
    spec = importlib.util.spec_from_file_location("model_engine_unit_conftest", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def call_fixture(fixture: Any, *args: Any) -> Any:
    """Call a pytest fixture's own function, outside pytest."""
    wrapped = getattr(fixture, "__pytest_wrapped__", None)
    function = wrapped.obj if wrapped is not None else fixture.__wrapped__
    return function(*args)


# --- the app -------------------------------------------------------------------------------


def build(source: Path, pod_url: str) -> tuple[Any, Any]:
    """model-engine's app wired to its fakes and to our pod; returns (app, pod app)."""
    conftest = load_unit_conftest(source)

    import orjson
    from fastapi import FastAPI, HTTPException, Request
    from fastapi.responses import JSONResponse
    from model_engine_server.api import dependencies
    from model_engine_server.api.app import app
    from model_engine_server.common.dtos.tasks import EndpointPredictV1Request, GetAsyncTaskV1Response, TaskStatus
    from model_engine_server.core.tracing.live_tracing_gateway import LiveTracingGateway
    from model_engine_server.inference.forwarding.forwarding import Forwarder, StreamingForwarder
    from model_engine_server.inference.post_inference_hooks import PostInferenceHooksHandler
    from model_engine_server.infra.gateways import (
        live_async_model_endpoint_inference_gateway,
        live_streaming_model_endpoint_inference_gateway,
        live_sync_model_endpoint_inference_gateway,
    )
    from model_engine_server.infra.gateways.fake_monitoring_metrics_gateway import FakeMonitoringMetricsGateway
    from sse_starlette.sse import EventSourceResponse

    # The endpoint records: one of each kind, all owned by the user "test_user_id".
    user = call_fixture(conftest.test_api_key)
    bundle_1 = call_fixture(conftest.model_bundle_1, user)
    bundle_5 = call_fixture(conftest.model_bundle_5, user)
    endpoints = [
        call_fixture(conftest.model_endpoint_1, user, bundle_1),  # async
        call_fixture(conftest.model_endpoint_2, user, bundle_1),  # sync
        call_fixture(conftest.model_endpoint_streaming, user, bundle_5),  # streaming
    ]
    records = {e.record.id: e.record for e in endpoints}
    infra = {e.infra_state.deployment_name: e.infra_state for e in endpoints}
    bundles = {b.id: b for b in (bundle_1, bundle_5)}

    # Pods: the live gateways build cluster DNS names; ours answer at pod_url/<service><path>.
    def sync_url(service_name: str, destination_path: str = "/predict", manually_resolve_dns: bool = False) -> str:
        return f"{pod_url}/pods/{service_name}{destination_path}"

    def streaming_url(service_name: str, path: str = "/stream", manually_resolve_dns: bool = False) -> str:
        return f"{pod_url}/pods/{service_name}{path}"

    live_sync_model_endpoint_inference_gateway._get_sync_endpoint_url = sync_url
    live_streaming_model_endpoint_inference_gateway._get_streaming_endpoint_url = streaming_url

    metrics = FakeMonitoringMetricsGateway()
    sync_gateway = live_sync_model_endpoint_inference_gateway.LiveSyncModelEndpointInferenceGateway(
        monitoring_metrics_gateway=metrics, tracing_gateway=LiveTracingGateway(), use_asyncio=True
    )
    streaming_gateway = live_streaming_model_endpoint_inference_gateway.LiveStreamingModelEndpointInferenceGateway(
        monitoring_metrics_gateway=metrics, use_asyncio=True
    )

    class ScriptedTaskQueue(conftest.FakeTaskQueueGateway):  # type: ignore[misc]
        """The unit tests' fake queue, plus STARTED, FAILURE and a worker that runs tasks.

        `run` does what model-engine's Celery worker does for a runnable image
        (`inference/forwarding/celery_forwarder.py`): the async Forwarder posts the request to the
        user container and wraps its answer with the HTTP status in the body; the post-inference
        callback hook then gets the result, or the exception when the task failed. `get_task`
        answers as `CeleryTaskQueueGateway.get_task` does (status_code moved out of the result).
        """

        def __init__(self) -> None:
            super().__init__()
            self.started: set[str] = set()
            self.failed: dict[str, tuple[str | None, str]] = {}
            self.submitted: list[str] = []
            self.taken: dict[str, dict[str, Any]] = {}  # tasks no longer queued, for `describe`

        def send_task(self, task_name: str, queue_name: str, args: Any = None, kwargs: Any = None, expires: Any = None):
            response = super().send_task(task_name, queue_name, args=args, kwargs=kwargs, expires=expires)
            self.submitted.append(response.task_id)
            return response

        def describe(self, task_id: str) -> dict[str, Any]:
            task = self.queue.get(task_id) or self.taken[task_id]
            return {"task_id": task_id, "queue_name": task["queue_name"], "request": task["args"][0]}

        def get_task(self, task_id: str) -> GetAsyncTaskV1Response:
            if task_id in self.failed:
                result, trace = self.failed[task_id]
                return GetAsyncTaskV1Response(
                    task_id=task_id, status=TaskStatus.FAILURE, result=result, traceback=trace, status_code=None
                )
            if task_id in self.started:
                return GetAsyncTaskV1Response(task_id=task_id, status=TaskStatus.STARTED)
            if task_id in self.completed:
                result = self.completed[task_id]
                status_code = None
                if isinstance(result, dict) and "status_code" in result:
                    result = dict(result)
                    status_code = result.pop("status_code")
                return GetAsyncTaskV1Response(
                    task_id=task_id, status=TaskStatus.SUCCESS, result=result, status_code=status_code
                )
            return super().get_task(task_id)

        def _take(self, task_id: str) -> dict[str, Any]:
            task = self.queue.pop(task_id)
            self.taken[task_id] = task
            self.started.discard(task_id)
            return task

        def start(self, task_id: str) -> None:
            if task_id not in self.queue:
                raise KeyError(task_id)
            self.started.add(task_id)

        def succeed(self, task_id: str, result: Any) -> None:
            self._take(task_id)
            self.completed[task_id] = result

        def fail(self, task_id: str, message: str) -> None:
            self._take(task_id)
            try:
                raise RuntimeError(message)
            except RuntimeError as exc:
                self.failed[task_id] = (str(exc), traceback.format_exc())

        async def run(self, task_id: str) -> None:
            task = self._take(task_id)
            payload = task["args"][0]
            request = EndpointPredictV1Request.model_validate(payload)
            record = records_by_destination[task["queue_name"]]
            forwarder = Forwarder(
                predict_endpoint=f"{pod_url}/model/predict",
                model_engine_unwrap=True,
                serialize_results_as_string=True,
                wrap_response=True,
                forward_http_status=False,
                forward_http_status_in_body=True,  # the async config (service--forwarder.yaml)
            )
            hooks = callback_hooks(record)
            outcome: Any
            try:
                outcome = await forwarder.forward(payload)
            except Exception as exc:
                self.failed[task_id] = (str(exc), traceback.format_exc())
                outcome = exc
            else:
                self.completed[task_id] = outcome
            # after_return: the hook gets a copy (it adds task_id to what it is given)
            given = dict(outcome) if isinstance(outcome, dict) else outcome
            await asyncio.get_running_loop().run_in_executor(None, hooks.handle, request, given, task_id)

    # Tasks go to the queue named by the endpoint's destination.
    records_by_destination = {
        e.record.destination: e.record for e in endpoints if e.record.endpoint_type.value == "async"
    }

    def callback_hooks(record: Any) -> Any:
        """The handler a worker of this endpoint builds, with the callback hook on (its user id is
        the endpoint's owner: `user_id: ${OWNER}` in the service templates)."""
        from model_engine_server.inference.infra.gateways.datadog_inference_monitoring_metrics_gateway import (
            DatadogInferenceMonitoringMetricsGateway,
        )

        return PostInferenceHooksHandler(
            endpoint_name=record.name,
            bundle_name=record.current_model_bundle.name,
            user_id=record.owner,
            billing_queue="",
            billing_tags={},
            default_callback_url=None,
            default_callback_auth=None,
            post_inference_hooks=["callback"],
            monitoring_metrics_gateway=DatadogInferenceMonitoringMetricsGateway(),
            endpoint_id=record.id,
            endpoint_type=record.endpoint_type,
            bundle_id=record.current_model_bundle.id,
            labels={},
            streaming_storage_gateway=conftest.FakeStreamingStorageGateway(),
        )

    task_queue = ScriptedTaskQueue()
    async_gateway = live_async_model_endpoint_inference_gateway.LiveAsyncModelEndpointInferenceGateway(
        task_queue_gateway=task_queue
    )

    make_repositories = call_fixture(conftest.get_repositories_generator_wrapper)(
        fake_docker_repository_image_always_exists=True,
        fake_model_bundle_repository_contents=bundles,
        fake_model_endpoint_record_repository_contents=records,
        fake_model_endpoint_infra_gateway_contents=infra,
        fake_batch_job_record_repository_contents={},
        fake_batch_job_progress_gateway_contents={},
        fake_cron_job_gateway_contents={},
        fake_docker_image_batch_job_bundle_repository_contents={},
        fake_docker_image_batch_job_gateway_contents={},
        fake_llm_fine_tuning_service_contents={},
        fake_file_storage_gateway_contents={},
        fake_trigger_repository_contents={},
        fake_file_system_gateway_contents={},
        fake_sync_inference_content=None,
    )

    def external_interfaces():
        # A new set of fakes per request, as in model-engine's API tests, with the live inference
        # gateways (and the one queue) in place of the fake inference gateways.
        for interfaces in make_repositories():
            service = interfaces.model_endpoint_service
            service.sync_model_endpoint_inference_gateway = sync_gateway
            service.streaming_model_endpoint_inference_gateway = streaming_gateway
            service.async_model_endpoint_inference_gateway = async_gateway
            interfaces.inference_task_queue_gateway = task_queue
            yield interfaces

    app.dependency_overrides[dependencies.get_external_interfaces] = external_interfaces
    app.dependency_overrides[dependencies.get_external_interfaces_read_only] = external_interfaces

    # --- the pod: a forwarder in front of a scriptable user container -------------------------
    pod = FastAPI()
    scripts: dict[str, collections.deque[dict[str, Any]]] = collections.defaultdict(collections.deque)
    seen: list[dict[str, Any]] = []

    def next_script(route: str) -> dict[str, Any] | None:
        queue = scripts[route]
        if not queue:
            return None
        script = queue[0]
        if script.get("times") is not None:
            script["times"] -= 1
            if script["times"] <= 0:
                queue.popleft()
        return script

    @pod.post("/pods/{service}/predict")
    async def forwarder_predict(service: str, request: EndpointPredictV1Request) -> Any:
        # http_forwarder.predict with the sync config (service--forwarder.yaml)
        forwarder = Forwarder(
            predict_endpoint=f"{pod_url}/model/predict",
            model_engine_unwrap=True,
            serialize_results_as_string=True,
            wrap_response=True,
            forward_http_status=True,
            forward_http_status_in_body=False,
        )
        return await forwarder.forward(request.model_dump())

    @pod.post("/pods/{service}/stream")
    async def forwarder_stream(service: str, request: EndpointPredictV1Request) -> Any:
        # http_forwarder.stream with the streaming config (serialize_results_as_string false)
        forwarder = StreamingForwarder(
            predict_endpoint=f"{pod_url}/model/stream",
            model_engine_unwrap=True,
            serialize_results_as_string=False,
        )
        responses = forwarder.forward(request.model_dump())
        initial = await responses.__anext__()

        async def events():
            yield {"data": orjson.dumps(initial).decode()}
            async for response in responses:
                yield {"data": orjson.dumps(response).decode()}

        return EventSourceResponse(events())

    @pod.post("/model/{route}")
    async def user_container(route: str, request: Request) -> Any:
        body = await request.json()
        seen.append({"route": route, "body": body})
        script = next_script(route)
        if script is not None and "status" in script:
            if "text" in script:
                from fastapi.responses import PlainTextResponse

                return PlainTextResponse(script["text"], status_code=script["status"])
            return JSONResponse(script.get("body"), status_code=script["status"])
        if route == "predict":
            return JSONResponse(body)  # an echo model
        if route == "stream":
            chunks = script["events"] if script else (body.get("chunks") if isinstance(body, dict) else None)
            items = chunks if isinstance(chunks, list) else [body]

            async def stream_events():
                for item in items:
                    yield {"data": json.dumps(item)}

            return EventSourceResponse(stream_events())
        raise HTTPException(404)

    @pod.post("/control/script/{route}")
    async def add_script(route: str, request: Request) -> dict[str, Any]:
        """Queue an answer of the user container for `route` (predict or stream).

        `{"status": 429, "body": {...}}` or `{"status": 500, "text": "..."}`; for stream,
        `{"events": [...]}` too. `times`: how many calls it answers (default 1; null: every call).
        """
        script = await request.json()
        script.setdefault("times", 1)
        scripts[route].append(script)
        return {"queued": len(scripts[route])}

    @pod.post("/control/reset")
    async def reset() -> dict[str, Any]:
        scripts.clear()
        seen.clear()
        return {}

    @pod.get("/control/seen")
    async def get_seen() -> list[dict[str, Any]]:
        return seen

    @pod.get("/control/endpoints")
    async def get_endpoints() -> list[dict[str, Any]]:
        return [{"id": e.record.id, "name": e.record.name, "kind": e.record.endpoint_type.value} for e in endpoints]

    @pod.get("/control/tasks")
    async def get_tasks() -> list[dict[str, Any]]:
        return [task_queue.describe(task_id) for task_id in task_queue.submitted]

    @pod.post("/control/tasks/{task_id}/{action}")
    async def act(task_id: str, action: str, request: Request) -> dict[str, Any]:
        """start | run | succeed (body: {"result": ...}) | fail (body: {"message": ...})."""
        body = await request.json() if await request.body() else {}
        try:
            if action == "start":
                task_queue.start(task_id)
            elif action == "run":
                await task_queue.run(task_id)
            elif action == "succeed":
                task_queue.succeed(task_id, body.get("result"))
            elif action == "fail":
                task_queue.fail(task_id, body.get("message", "boom"))
            else:
                raise HTTPException(404, f"no action {action}")
        except KeyError as exc:
            raise HTTPException(409, f"task {task_id} is not pending") from exc
        return task_queue.get_task(task_id).model_dump()

    return app, pod


# --- serving -------------------------------------------------------------------------------


def bind() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


async def serve(source: Path, log_level: str) -> None:
    import uvicorn

    app_socket, pod_socket = bind(), bind()
    pod_url = f"http://127.0.0.1:{pod_socket.getsockname()[1]}"
    app, pod = build(source, pod_url)
    servers = [
        uvicorn.Server(uvicorn.Config(app, log_level=log_level, access_log=False, lifespan="off")),
        uvicorn.Server(uvicorn.Config(pod, log_level=log_level, access_log=False, lifespan="off")),
    ]
    for server in servers:
        server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    tasks = [
        asyncio.create_task(servers[0].serve(sockets=[app_socket])),
        asyncio.create_task(servers[1].serve(sockets=[pod_socket])),
    ]
    while not all(s.started for s in servers):
        if any(t.done() for t in tasks):
            await asyncio.gather(*tasks)
            raise SystemExit("a server stopped before it started")
        await asyncio.sleep(0.05)
    print(json.dumps({"app": f"http://127.0.0.1:{app_socket.getsockname()[1]}", "pod": pod_url}), flush=True)

    # Serve until our parent closes stdin (or goes away).
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)
    for server in servers:
        server.should_exit = True
    await asyncio.gather(*tasks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, required=True, help="a checkout of scaleapi/llm-engine")
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args()
    source = args.source.resolve()
    prepare_environment(source)
    asyncio.run(serve(source, args.log_level))


if __name__ == "__main__":
    main()
