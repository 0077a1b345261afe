"""The body of Launch's task routes, validated the way Launch's FastAPI app does it.

Launch declares the body as a pydantic 2 model (`EndpointPredictV1Request`, ME
`common/dtos/tasks.py`; FastAPI 0.135, pydantic 2.12) and answers a bad one with 422 and a list of
pydantic errors, `{"type", "loc", "msg", "input"}` and sometimes `ctx` (FastAPI leaves out pydantic's
`url`). We check the same fields and write the same errors. FastAPI decodes the JSON before it
authenticates and validates the fields after, so `json_error` is separate from
`parse_predict_request`. Fields we do not use (`cloudpickle`, `destination_path`,
`timeout_seconds`, `num_retries`, unknown ones) are ignored, as pydantic ignores extra fields.
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


def validation_error(
    loc: Sequence[str | int], msg: str, type_: str, input_: Any, ctx: dict[str, Any] | None = None
) -> ErrorDetail:
    """One entry of a 422 `detail` list, as FastAPI writes pydantic 2's errors."""
    error: ErrorDetail = {"type": type_, "loc": list(loc), "msg": msg, "input": input_}
    if ctx is not None:
        error["ctx"] = ctx
    return error


def missing(loc: Sequence[str | int], input_: Any = None) -> ErrorDetail:
    return validation_error(loc, "Field required", "missing", input_)


def not_an_object(loc: Sequence[str | int], input_: Any) -> ErrorDetail:
    return validation_error(
        loc, "Input should be a valid dictionary or object to extract fields from", "model_attributes_type", input_
    )


def json_error(body: bytes) -> ErrorDetail | None:
    """FastAPI's error for a body that is not JSON (checked before auth), or None."""
    if not body:
        return None
    try:
        json.loads(body)
    except ValueError as exc:
        pos = exc.pos if isinstance(exc, json.JSONDecodeError) else 0
        msg = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
        return validation_error(["body", pos], "JSON decode error", "json_invalid", {}, {"error": msg})
    return None


def parse_predict_request(body: bytes) -> PredictRequest:
    """Validate a task body; raise RequestValidationError with every problem found."""
    if not body:
        # FastAPI treats an empty body as a missing (required) body model.
        raise RequestValidationError([missing(["body"])])
    error = json_error(body)
    if error is not None:
        raise RequestValidationError([error])
    data = json.loads(body)
    if not isinstance(data, dict):
        raise RequestValidationError([not_an_object(["body"], data)])
    errors: list[ErrorDetail] = []
    url = _optional_str(data, "url", errors)
    callback_url = _optional_str(data, "callback_url", errors)
    return_pickled = _optional_bool(data, "return_pickled", errors)
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


# What pydantic 2's lax mode reads as a bool.
_TRUE = {"1", "on", "t", "true", "y", "yes"}
_FALSE = {"0", "off", "f", "false", "n", "no"}


def _optional_bool(data: dict[str, Any], name: str, errors: list[ErrorDetail]) -> bool | None:
    value = data.get(name)
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
        return value.lower() in _TRUE
    if isinstance(value, str):
        msg, type_ = "Input should be a valid boolean, unable to interpret input", "bool_parsing"
    else:
        msg, type_ = "Input should be a valid boolean", "bool_type"
    errors.append(validation_error(["body", name], msg, type_, value))
    return None


def _optional_str(data: dict[str, Any], name: str, errors: list[ErrorDetail]) -> str | None:
    value = data.get(name)
    if value is None or isinstance(value, str):
        return value
    errors.append(validation_error(["body", name], "Input should be a valid string", "string_type", value))
    return None


_AUTH_FIELDS = {"basic": ("username", "password"), "mtls": ("cert", "key")}
_DISCRIMINATOR = {"discriminator": "'kind'"}


def _callback_auth(value: Any, errors: list[ErrorDetail]) -> CallbackAuth | None:
    """Check `callback_auth`, a union chosen by `kind` (ME `CallbackAuth`)."""
    loc = ["body", "callback_auth"]
    if value is None:
        return None
    if not isinstance(value, dict):
        errors.append(not_an_object(loc, value))
        return None
    kind = value.get("kind")
    if kind is None:
        msg = "Unable to extract tag using discriminator 'kind'"
        errors.append(validation_error(loc, msg, "union_tag_not_found", value, dict(_DISCRIMINATOR)))
        return None
    if kind not in _AUTH_FIELDS:
        expected = "'basic', 'mtls'"
        msg = f"Input tag '{kind}' found using 'kind' does not match any of the expected tags: {expected}"
        ctx = {**_DISCRIMINATOR, "tag": str(kind), "expected_tags": expected}
        errors.append(validation_error(loc, msg, "union_tag_invalid", value, ctx))
        return None
    fields: list[str] = []
    for name in _AUTH_FIELDS[kind]:
        item = value.get(name)
        where = [*loc, kind, name]
        if name not in value:
            errors.append(missing(where, value))
        elif not isinstance(item, str):
            errors.append(validation_error(where, "Input should be a valid string", "string_type", item))
        else:
            fields.append(item)
    if len(fields) < 2:
        return None
    if kind == "basic":
        return BasicCallbackAuth(username=fields[0], password=fields[1])
    return MtlsCallbackAuth(cert=fields[0], key=fields[1])
