"""The body of Launch's task routes, validated the way Launch's FastAPI app does it.

Launch declares the body as a pydantic 1.10 model (`EndpointPredictV1Request`, ME
`common/dtos/tasks.py`) and answers a bad one with 422 and a list of pydantic errors. We check the
same fields and report errors with pydantic v1's `type` and `msg` strings, so a client sees the
shape it would see from Launch. Locations inside `callback_auth` are simplified to
`["body", "callback_auth", field]` (pydantic names the union member too). Fields we do not use
(`cloudpickle`, `destination_path`, `timeout_seconds`, `num_retries`, unknown ones) are ignored,
as pydantic ignores extra fields.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

ErrorDetail = dict[str, Any]


@dataclass(frozen=True)
class BasicCallbackAuth:
    """`callback_auth` of kind basic: HTTP Basic credentials for the callback POST."""

    username: str
    password: str = field(repr=False)


@dataclass(frozen=True)
class MtlsCallbackAuth:
    """`callback_auth` of kind mtls: a PEM client certificate and key for the callback's TLS."""

    cert: str = field(repr=False)
    key: str = field(repr=False)


CallbackAuth = BasicCallbackAuth | MtlsCallbackAuth


@dataclass(frozen=True)
class PredictRequest:
    """One validated task body. `args` is None when absent or null."""

    url: str | None = None
    args: Any = None
    callback_url: str | None = None
    callback_auth: CallbackAuth | None = None
    return_pickled: bool = False


class RequestValidationError(Exception):
    """A request Launch would refuse with 422; `errors` are pydantic-shaped details."""

    def __init__(self, errors: Sequence[ErrorDetail]) -> None:
        super().__init__(f"{len(errors)} validation error(s)")
        self.errors = list(errors)


def validation_error(loc: Sequence[str | int], msg: str, type_: str) -> ErrorDetail:
    """One entry of a 422 `detail` list, as pydantic v1 writes it."""
    return {"loc": list(loc), "msg": msg, "type": type_}


def missing(loc: Sequence[str | int]) -> ErrorDetail:
    return validation_error(loc, "field required", "value_error.missing")


def parse_predict_request(body: bytes) -> PredictRequest:
    """Validate a task body; raise RequestValidationError with every problem found."""
    if not body.strip():
        # FastAPI treats an empty body as a missing (required) body model.
        raise RequestValidationError([missing(["body"])])
    try:
        data = json.loads(body)
    except ValueError as exc:
        pos = exc.pos if isinstance(exc, json.JSONDecodeError) else 0
        error = validation_error(["body", pos], str(exc), "value_error.jsondecode")
        raise RequestValidationError([error]) from None
    if not isinstance(data, dict):
        raise RequestValidationError([validation_error(["body"], "value is not a valid dict", "type_error.dict")])
    errors: list[ErrorDetail] = []
    url = _optional_str(data, "url", errors)
    callback_url = _optional_str(data, "callback_url", errors)
    return_pickled = data.get("return_pickled")
    if return_pickled is not None and not isinstance(return_pickled, bool):
        errors.append(
            validation_error(["body", "return_pickled"], "value could not be parsed to a boolean", "type_error.bool")
        )
    auth = _callback_auth(data.get("callback_auth"), errors)
    if errors:
        raise RequestValidationError(errors)
    return PredictRequest(
        url=url,
        args=data.get("args"),
        callback_url=callback_url,
        callback_auth=auth,
        return_pickled=bool(return_pickled),
    )


def _optional_str(data: dict[str, Any], name: str, errors: list[ErrorDetail]) -> str | None:
    value = data.get(name)
    if value is None or isinstance(value, str):
        return value
    errors.append(validation_error(["body", name], "str type expected", "type_error.str"))
    return None


_AUTH_FIELDS = {"basic": ("username", "password"), "mtls": ("cert", "key")}


def _callback_auth(value: Any, errors: list[ErrorDetail]) -> CallbackAuth | None:
    """Check `callback_auth`, a union chosen by `kind` (ME `CallbackAuth`)."""
    loc = ["body", "callback_auth"]
    if value is None:
        return None
    if not isinstance(value, dict):
        errors.append(validation_error(loc, "value is not a valid dict", "type_error.dict"))
        return None
    kind = value.get("kind")
    if kind is None:
        errors.append(
            validation_error(
                loc,
                "Discriminator 'kind' is missing in value",
                "value_error.discriminated_union.missing_discriminator",
            )
        )
        return None
    if kind not in _AUTH_FIELDS:
        errors.append(
            validation_error(
                loc,
                f"No match for discriminator 'kind' and value {kind!r} (allowed values: 'basic', 'mtls')",
                "value_error.discriminated_union.invalid_discriminator",
            )
        )
        return None
    fields: list[str] = []
    valid = True
    for name in _AUTH_FIELDS[kind]:
        item = value.get(name)
        if item is None:
            errors.append(missing([*loc, name]))
            valid = False
        elif not isinstance(item, str):
            errors.append(validation_error([*loc, name], "str type expected", "type_error.str"))
            valid = False
        else:
            fields.append(item)
    if not valid:
        return None
    if kind == "basic":
        return BasicCallbackAuth(username=fields[0], password=fields[1])
    return MtlsCallbackAuth(cert=fields[0], key=fields[1])
