"""Running endpoint functions on a request's inputs, and stopping them when the caller goes away.

Inputs follow Launch's artifact bundles (ME `inference/common.py`): the bytes at `url` win, then
`args` as keyword arguments, else no arguments. `async def` functions run on the loop and are
cancelled with their caller; plain functions run in a thread (a thread cannot be stopped, so a
cancelled call lets it finish and drops the result). Async generators are iterated directly and
`aclose()`d when the consumer stops; plain generators are stepped in a thread and `close()`d
there once the step in flight, if any, has returned.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
from collections.abc import AsyncGenerator, Awaitable, Callable, Generator
from typing import Any

from launch_gateway.testing.local_launch.container import ContainerError
from launch_gateway.testing.local_launch.endpoints import EndpointSpec
from launch_gateway.testing.local_launch.predict_request import PredictRequest
from launch_gateway.testing.local_launch.results import Outcome, ResultStore, format_failure

logger = logging.getLogger(__name__)

Inputs = tuple[tuple[Any, ...], dict[str, Any]]
Fetch = Callable[[str], Awaitable[bytes]]

_DONE = object()  # next()'s default: StopIteration cannot cross a thread's future


async def call_function(function: Callable[..., Any], inputs: Inputs) -> Any:
    """Call a non-generator function: await `async def`, run anything else in a thread."""
    args, kwargs = inputs
    if inspect.iscoroutinefunction(function):
        return await function(*args, **kwargs)
    result = await asyncio.to_thread(function, *args, **kwargs)
    if inspect.isawaitable(result):  # e.g. an object whose __call__ is async
        return await result
    return result


def open_stream(function: Callable[..., Any], inputs: Inputs) -> AsyncGenerator[Any, None]:
    """The events of a generator or async generator function, as an async generator to aclose()."""
    args, kwargs = inputs
    if inspect.isasyncgenfunction(function):
        events: AsyncGenerator[Any, None] = function(*args, **kwargs)
        return events
    return _step_in_thread(function, args, kwargs)


async def _step_in_thread(
    function: Callable[..., Generator[Any, None, None]], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> AsyncGenerator[Any, None]:
    loop = asyncio.get_running_loop()
    generator: Generator[Any, None, None] = function(*args, **kwargs)
    lock = threading.Lock()  # keeps close() from running while a step is still in its thread

    def step() -> Any:
        with lock:
            return next(generator, _DONE)

    def close() -> None:
        with lock:
            generator.close()

    try:
        while (item := await loop.run_in_executor(None, step)) is not _DONE:
            yield item
    finally:
        if inspect.getgeneratorstate(generator) != inspect.GEN_CLOSED:  # stopped by the consumer
            # Not awaited: a cancelled consumer must not wait for a blocking step to return.
            loop.run_in_executor(None, close).add_done_callback(_log_close_error)


def _log_close_error(future: asyncio.Future[None]) -> None:
    if not future.cancelled() and future.exception() is not None:
        logger.warning("closing a generator endpoint failed", exc_info=future.exception())


class ModelRunner:
    """Runs an endpoint's function for one request and encodes what it returns."""

    def __init__(self, fetch: Fetch, results: ResultStore) -> None:
        self._fetch = fetch
        self._results = results

    async def inputs(self, request: PredictRequest) -> Inputs:
        """The call's arguments: `(url_bytes,)`, `**args`, or nothing."""
        if request.url is not None:
            return (await self._fetch(request.url),), {}
        if request.args is None:
            return (), {}
        if not isinstance(request.args, dict):
            # Launch calls predict_fn(**args), which fails the same way.
            raise TypeError(f"args must be a JSON object of keyword arguments, not {type(request.args).__name__}")
        return (), request.args

    async def run(self, spec: EndpointSpec, request: PredictRequest) -> Outcome:
        """Run to completion; a raising function is an Outcome with its traceback, not an error.

        A sync call on a streaming endpoint runs its `predict`, the container's predict route;
        without one, the container answers 404 as a server without the route does.
        """
        try:
            inputs = await self.inputs(request)
            function = spec.predict if spec.kind == "streaming" else spec.function
            if function is None:
                raise ContainerError(404, {"detail": "Not Found"})
            value = await call_function(function, inputs)
            result = self._results.encode(value, pickled=request.return_pickled)
        except ContainerError as exc:
            body = self._results.encode(exc.body, pickled=False)
            return Outcome(result=body, error=exc, status_code=exc.status_code)
        except Exception as exc:
            return Outcome(error=exc, traceback=format_failure(exc))
        return Outcome(result=result)

    async def open_events(self, spec: EndpointSpec, request: PredictRequest) -> AsyncGenerator[Any, None]:
        """Fetch the inputs, then start the streaming function."""
        return open_stream(spec.function, await self.inputs(request))
