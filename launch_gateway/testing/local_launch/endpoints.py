"""Model endpoints of the local Launch server: what runs behind a name, and how Launch describes it.

An `EndpointSpec` binds a Launch endpoint name and type to a plain Python callable. The spec text
`NAME=KIND:module.path:function` lets a command line add endpoints, and `EndpointRegistry` answers
the lookups Launch clients make before every predict (launch-http-api.md §1).
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, cast, get_args

EndpointKind = Literal["sync", "async", "streaming"]

_KINDS: tuple[str, ...] = get_args(EndpointKind)
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_SPEC_SHAPE = "NAME=KIND:module.path:function"


def is_stream_function(function: Callable[..., Any]) -> bool:
    """True for generator and async generator functions: the ones a streaming endpoint runs."""
    return inspect.isasyncgenfunction(function) or inspect.isgeneratorfunction(function)


@dataclass(frozen=True)
class EndpointSpec:
    """A Launch endpoint served by a Python callable.

    `sync` and `async` endpoints run a plain or `async def` function; `streaming` endpoints run a
    generator or async generator, whose every yield is one SSE event. A sync call on a streaming
    endpoint goes to its container's predict route, as Launch sends it: `predict`, a plain or
    `async def` function, or, without one, a container that has no such route (HTTP 404).
    `owner` is the team whose keys see the endpoint (None: every key's); Launch answers 404 to the
    others, and posts callbacks as this owner.
    """

    name: str
    kind: EndpointKind
    function: Callable[..., Any]
    owner: str | None = field(default=None, kw_only=True)
    predict: Callable[..., Any] | None = field(default=None, kw_only=True)

    def __post_init__(self) -> None:
        if not _NAME.fullmatch(self.name):
            raise ValueError(
                f"invalid endpoint name {self.name!r}: use letters, digits, '.', '_' and '-', "
                "starting with a letter or digit"
            )
        if self.kind not in _KINDS:
            raise ValueError(
                f"unknown endpoint kind {self.kind!r} for {self.name!r}: expected sync, async or streaming"
            )
        if not callable(self.function):
            raise ValueError(f"endpoint {self.name!r}: {self.function!r} is not callable")
        streams = is_stream_function(self.function)
        if self.kind == "streaming" and not streams:
            raise ValueError(
                f"streaming endpoint {self.name!r} needs a generator or async generator function, "
                f"got {_describe(self.function)}"
            )
        if self.kind != "streaming" and streams:
            raise ValueError(
                f"{self.kind} endpoint {self.name!r} got generator function {_describe(self.function)}; "
                "declare it as streaming"
            )

        if self.predict is not None and (self.kind != "streaming" or is_stream_function(self.predict)):
            raise ValueError(f"endpoint {self.name!r}: predict is the plain function of a streaming endpoint")

    @property
    def id(self) -> str:
        """The Launch endpoint id: stable for a name, so ids survive server restarts."""
        return endpoint_id(self.name)


def endpoint_id(name: str) -> str:
    """The id the local server gives the endpoint called `name` (`end_` and 20 hex digits)."""
    return "end_" + hashlib.sha256(name.encode()).hexdigest()[:20]


def _describe(function: Callable[..., Any]) -> str:
    module = getattr(function, "__module__", None)
    qualname = getattr(function, "__qualname__", None)
    return f"{module}.{qualname}" if module and qualname else repr(function)


def parse_endpoint_spec(text: str) -> EndpointSpec:
    """Parse `NAME=KIND:module.path:function` and import the function it names.

    Raises ValueError naming the problem: the shape, the kind, the import, the attribute, or a
    function that does not suit the kind.
    """
    name, equals, target = text.partition("=")
    parts = target.split(":")
    if not equals or len(parts) != 3 or not all(part.strip() for part in (name, *parts)):
        raise ValueError(f"endpoint spec {text!r} must look like {_SPEC_SHAPE}")
    name = name.strip()
    kind, module_name, attribute = (part.strip() for part in parts)
    if kind not in _KINDS:
        raise ValueError(f"endpoint spec {text!r}: unknown kind {kind!r}, expected one of {', '.join(_KINDS)}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"endpoint spec {text!r}: cannot import module {module_name!r}: {exc}") from exc
    function: Any = module
    for step in attribute.split("."):
        try:
            function = getattr(function, step)
        except AttributeError:
            raise ValueError(f"endpoint spec {text!r}: module {module_name!r} has no attribute {attribute!r}") from None
    return EndpointSpec(name=name, kind=cast(EndpointKind, kind), function=function)


class EndpointRegistry:
    """The endpoints a server serves, found by name or id, and their Launch records."""

    def __init__(self, endpoints: Iterable[EndpointSpec], *, created_at: datetime) -> None:
        self._by_name: dict[str, EndpointSpec] = {}
        for spec in endpoints:
            if spec.name in self._by_name:
                raise ValueError(f"two endpoints are named {spec.name!r}")
            self._by_name[spec.name] = spec
        self._by_id = {spec.id: spec for spec in self._by_name.values()}
        self._created_at = created_at.isoformat()

    @property
    def endpoints(self) -> Sequence[EndpointSpec]:
        return tuple(self._by_name.values())

    def by_name(self, name: str, team: str | None = None) -> EndpointSpec | None:
        """The endpoint called `name`, if there is one that `team` may see (None: any team)."""
        return _visible(self._by_name.get(name), team)

    def by_id(self, id_: str, team: str | None = None) -> EndpointSpec | None:
        return _visible(self._by_id.get(id_), team)

    def visible(self, team: str | None) -> list[EndpointSpec]:
        """The endpoints `team` may see: its own and those without an owner."""
        return [spec for spec in self._by_name.values() if _visible(spec, team) is not None]

    def record(self, spec: EndpointSpec) -> dict[str, Any]:
        """The endpoint as `GET /v1/model-endpoints` describes it (GetModelEndpointV1Response)."""
        return {
            "id": spec.id,
            "name": spec.name,
            "endpoint_type": spec.kind,
            "destination": f"local-launch.{spec.name}",
            "deployment_name": spec.name,
            "metadata": {},
            "bundle_name": _describe(spec.function),
            "status": "READY",
            "post_inference_hooks": ["callback"] if spec.kind == "async" else None,
            "default_callback_url": None,
            "default_callback_auth": None,
            "labels": {},
            "aws_role": None,
            "results_s3_bucket": None,
            "created_by": spec.owner or "local-launch",
            "created_at": self._created_at,
            "last_updated_at": self._created_at,
            "deployment_state": None,
            "resource_state": None,
            "num_queued_items": None,
            "public_inference": False,
        }


def _visible(spec: EndpointSpec | None, team: str | None) -> EndpointSpec | None:
    if spec is None or spec.owner is None or team is None or spec.owner == team:
        return spec
    return None
