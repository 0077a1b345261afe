"""Async tasks: an in-process queue served by worker tasks, standing in for Launch's Celery.

A task is PENDING until a worker takes it, STARTED while its function runs (unless the queue
does not track it: then PENDING until it ends), then SUCCESS or FAILURE; `response()` is the body
of `GET /v1/async-tasks/{id}` in each state (ME `CeleryTaskQueueGateway.get_task`): always with
`result`, `traceback` and `status_code`, null where they have no value. Unknown ids read as
PENDING, as Celery reports them. A container's non-2xx answer is SUCCESS with its status code.
When a task with a `callback_url` succeeds, `{"result": ..., "status_code": N, "task_id": ...}` is
POSTed there in the background as its endpoint's owner; a failed task sends none (ME's callback
hook is handed the exception and gives up).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from launch_gateway.testing.local_launch.callbacks import CallbackSender
from launch_gateway.testing.local_launch.endpoints import EndpointSpec
from launch_gateway.testing.local_launch.predict_request import PredictRequest
from launch_gateway.testing.local_launch.results import Outcome

TaskStatus = Literal["PENDING", "STARTED", "SUCCESS", "FAILURE"]
Run = Callable[[EndpointSpec, PredictRequest], Awaitable[Outcome]]


@dataclass(eq=False)
class AsyncTask:
    """One queued prediction and, once it ends, its outcome."""

    task_id: str
    spec: EndpointSpec
    request: PredictRequest
    owner: str
    status: TaskStatus = "PENDING"
    outcome: Outcome | None = None
    ended: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    def response(self) -> dict[str, Any]:
        """The body of `GET /v1/async-tasks/{task_id}` now."""
        outcome = self.outcome
        if outcome is None:
            return pending(self.task_id, self.status)
        if outcome.succeeded or outcome.container_error is not None:
            return {
                "task_id": self.task_id,
                "status": "SUCCESS",
                "result": outcome.result,
                "traceback": None,
                "status_code": outcome.status_code,
            }
        return {
            "task_id": self.task_id,
            "status": "FAILURE",
            "result": str(outcome.error),
            "traceback": outcome.traceback,
            "status_code": None,
        }

    def callback_body(self) -> dict[str, Any] | None:
        """What the worker's callback hook posts, or None when it sends nothing (a failed task)."""
        outcome = self.outcome
        if outcome is None or outcome.result is None:
            return None
        return {**outcome.result, "status_code": outcome.status_code, "task_id": self.task_id}


def pending(task_id: str, status: TaskStatus = "PENDING") -> dict[str, Any]:
    return {"task_id": task_id, "status": status, "result": None, "traceback": None, "status_code": None}


class TaskQueue:
    """Queues tasks for `workers` worker tasks that `run` them; start() then stop()."""

    def __init__(self, run: Run, callbacks: CallbackSender, *, workers: int, track_started: bool = True) -> None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        self._run = run
        self._callbacks = callbacks
        self._worker_count = workers
        self._track_started = track_started
        self._queue: asyncio.Queue[AsyncTask] = asyncio.Queue()
        self._tasks: dict[str, AsyncTask] = {}
        self._workers: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._workers = [
            asyncio.create_task(self._work(), name=f"local-launch-worker-{n}") for n in range(self._worker_count)
        ]

    async def stop(self) -> None:
        """Cancel the workers; a task they were running stays STARTED."""
        for worker in self._workers:
            worker.cancel()
        if self._workers:
            await asyncio.wait(self._workers)
        self._workers = []

    def submit(self, spec: EndpointSpec, request: PredictRequest, owner: str) -> str:
        """Queue a task; `owner` is who its callback comes from."""
        task = AsyncTask(task_id=str(uuid.uuid4()), spec=spec, request=request, owner=owner)
        self._tasks[task.task_id] = task
        self._queue.put_nowait(task)
        return task.task_id

    def ids(self) -> list[str]:
        """Every task's id, oldest first."""
        return list(self._tasks)

    def response(self, task_id: str) -> dict[str, Any]:
        task = self._tasks.get(task_id)
        if task is None:
            return pending(task_id)
        return task.response()

    async def wait(
        self,
        task_id: str,
        timeout: float = 5.0,  # noqa: ASYNC109 (bounded test wait)
    ) -> dict[str, Any]:
        """The task's response once it has ended; KeyError for an unknown id, else TimeoutError."""
        task = self._tasks[task_id]
        async with asyncio.timeout(timeout):
            await task.ended.wait()
        return task.response()

    async def _work(self) -> None:
        while True:
            task = await self._queue.get()
            if self._track_started:
                task.status = "STARTED"
            outcome = await self._run(task.spec, task.request)
            task.outcome = outcome
            task.status = task.response()["status"]
            task.ended.set()
            body = task.callback_body()
            if task.request.callback_url is not None and body is not None:
                self._callbacks.schedule(
                    task.task_id, task.request.callback_url, task.request.callback_auth, task.owner, body
                )
