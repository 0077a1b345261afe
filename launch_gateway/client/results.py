"""How a response's `result` looks: the gateway's JSON text (`"json"`) or the Launch client's shapes (`"launch"`).

The gateway normalises every result to JSON text of the predict function's value (the proto's
`EndpointResponse.result`). The Launch client (scale-launch 0.4.2, `launch/model_endpoint.py`) hands
each call's body on differently, and `GatewayClient(..., results="launch")` rebuilds its shapes:

    call    status    Launch client takes          result here                  result_url here
    sync    any       the body's `result` as is    {"result": "<json>"}         None
                                                   {"result_url": url} pickled  None (url in result)
                                                   FAILURE: the raw value       None
    async   SUCCESS   result.result, .result_url   "<json>" (as "json" gives)   url when pickled
    async   FAILURE   the raw `result`             the raw value: 'boom'        None
    stream  any       result.result                the value: {"i": 0}          None

"The raw value" is `json.loads` of the gateway's text, which is Launch's FAILURE `result` serialised
whole, so it is exact. The sync shape is exact for Launch's wrapped results (`{"result": "<json
text>"}` and `{"result_url": ...}`, what artifact bundles and forwarders send); docs/sdk.md lists the
bodies it cannot rebuild.
"""

from __future__ import annotations

import json
from typing import Any, Literal

ResultForm = Literal["json", "launch"]
CallKind = Literal["sync", "async", "stream"]
RESULT_FORMS: tuple[ResultForm, ...] = ("json", "launch")


def check_result_form(results: str) -> ResultForm:
    """`results` if it names a form; ValueError otherwise (a typo must not fall back silently)."""
    for form in RESULT_FORMS:
        if results == form:
            return form
    raise ValueError(f"results must be 'json' or 'launch', not {results!r}")


def _value(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def shape_result(
    form: ResultForm, call: CallKind, status: str, result: str | None, result_url: str | None
) -> tuple[Any, str | None]:
    """`(result, result_url)` in `form` for one response of `call` (see the module's table)."""
    if form == "json":
        return result, result_url
    if call == "sync":
        if status == "FAILURE":
            return _value(result), None
        if result_url is not None:
            return {"result_url": result_url}, None
        return (None if result is None else {"result": result}), None
    if call == "async":
        if status == "FAILURE":
            return _value(result), None
        return result, result_url
    return _value(result), None
