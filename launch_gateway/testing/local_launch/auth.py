"""Launch's API-key check (ME `api/dependencies.py` `verify_authentication`, launch-http-api.md §5).

The key travels as the HTTP Basic user name (the password is ignored) or as a Bearer token. An
Authorization header with another scheme counts as no credentials, as FastAPI's optional
`HTTPBasic` and `OAuth2PasswordBearer` read it.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Collection

NO_CREDENTIALS = "No authentication was passed in"
UNKNOWN_KEY = "Could not authenticate user"


def read_api_key(authorization: str | None) -> str | None:
    """The API key in an Authorization header value, or None if it carries none."""
    if not authorization:
        return None
    scheme, _, credentials = authorization.strip().partition(" ")
    credentials = credentials.strip()
    if scheme.lower() == "bearer":
        return credentials or None
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    username, _, _password = decoded.partition(":")
    return username


def authentication_error(api_key: str | None, api_keys: Collection[str]) -> str | None:
    """The 401 detail for this key, or None when it may pass (any key does if `api_keys` is empty)."""
    if not api_keys:
        return None
    if api_key is None:
        return NO_CREDENTIALS
    if api_key not in api_keys:
        return UNKNOWN_KEY
    return None
