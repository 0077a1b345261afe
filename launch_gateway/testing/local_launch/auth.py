"""Launch's API-key check (ME `api/dependencies.py` `verify_authentication`, launch-http-api.md §5).

The key travels as the HTTP Basic user name (the password is ignored) or as a Bearer token; Basic
wins when both could apply. An Authorization header with another scheme counts as no credentials,
as FastAPI's optional `HTTPBasic` and `OAuth2PasswordBearer` read it, while a Basic header that is
not base64 of `user:password` is refused outright ("Not authenticated"). The 401's
`WWW-Authenticate` names the scheme that failed: Basic for Basic credentials, Bearer for a token
and for no credentials at all.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Collection
from dataclasses import dataclass
from typing import Literal

NO_CREDENTIALS = "No authentication was passed in"
UNKNOWN_KEY = "Could not authenticate user"
MALFORMED_BASIC = "Not authenticated"

Scheme = Literal["Basic", "Bearer"]


@dataclass(frozen=True)
class Credentials:
    """What an Authorization header carries: the key (None if none or unreadable) and its scheme."""

    api_key: str | None
    scheme: Scheme | None = None
    malformed: bool = False


def read_credentials(authorization: str | None) -> Credentials:
    """The API key in an Authorization header value, and how it came."""
    if not authorization:
        return Credentials(None)
    scheme, _, credentials = authorization.strip().partition(" ")
    credentials = credentials.strip()
    if scheme.lower() == "bearer":
        return Credentials(credentials or None, "Bearer")
    if scheme.lower() != "basic":
        return Credentials(None)
    try:
        decoded = base64.b64decode(credentials).decode("ascii")
    except (binascii.Error, ValueError):
        return Credentials(None, "Basic", malformed=True)
    username, colon, _password = decoded.partition(":")
    if not colon:
        return Credentials(None, "Basic", malformed=True)
    return Credentials(username, "Basic")


def read_api_key(authorization: str | None) -> str | None:
    """The API key in an Authorization header value, or None if it carries none."""
    return read_credentials(authorization).api_key


def authentication_error(credentials: Credentials, api_keys: Collection[str]) -> tuple[str, Scheme] | None:
    """The 401 detail and WWW-Authenticate scheme for these credentials, or None when they pass
    (anything does when `api_keys` is empty)."""
    if not api_keys:
        return None
    if credentials.malformed:
        return MALFORMED_BASIC, "Basic"
    if credentials.api_key is None:
        return NO_CREDENTIALS, "Bearer"
    if credentials.api_key not in api_keys:
        return UNKNOWN_KEY, credentials.scheme or "Bearer"
    return None
