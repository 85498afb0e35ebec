"""Bearer tokens and the three access levels, free of any transport.

HTTP (`app.security.http`) and any other transport (gRPC metadata) hand `TokenGuard.check` the
raw `authorization` value they received ("Bearer xyz", or None) and the access level of what was
asked for; the guard raises `Unauthorized` (401) or `Forbidden` (403), which each transport maps
the way it maps every other `ServingError`.

Rules:
- OPEN (health, documentation, the web page): always allowed.
- API (inference, metadata, tasks, metrics): allowed when no API token is configured; otherwise
  an API token or an admin token is needed.
- ADMIN (model control, repository config): refused (403) while no admin token is configured,
  so the control routes are closed by default; a missing or wrong token is 401, an API token 403.

Comparison is constant-time: the presented token is compared with every configured token by
`hmac.compare_digest`, without stopping at the first match, so the time taken does not say which
token (or which prefix of one) came close. Tokens never appear in messages, logs or `repr`.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from enum import StrEnum

from app.errors import Forbidden, Unauthorized

BEARER_PREFIX = "bearer "
ADMIN_HOW_TO_ENABLE = (
    "the model-control API is disabled: start the server with --admin-token "
    "(or KERASSERVE_ADMIN_TOKENS, or --admin-token-file) to enable it"
)


class Access(StrEnum):
    """What a route needs: nothing, an API (or admin) token, or an admin token."""

    OPEN = "open"
    API = "api"
    ADMIN = "admin"


class InvalidTokenError(ValueError):
    """A configured token with characters a bearer token cannot carry (the token not shown)."""


def is_valid_token(text: str) -> bool:
    """Visible ASCII without commas: what fits an `Authorization` header and survives the
    comma-separated `KERASSERVE_*_TOKENS` variables the workers of `python -m app` read."""
    return (
        bool(text)
        and text.isascii()
        and text.isprintable()
        and not any(character in text for character in " ,")
    )


def _clean(tokens: Iterable[str], kind: str) -> tuple[bytes, ...]:
    """Configured tokens as bytes, stripped, empty entries dropped, duplicates removed."""
    seen: dict[bytes, None] = {}
    for token in tokens:
        text = token.strip()
        if not text:
            continue
        if not is_valid_token(text):
            raise InvalidTokenError(
                f"an {kind} token may hold only visible ASCII characters "
                "other than ',' (one of the configured tokens does not)"
            )
        seen[text.encode("ascii")] = None
    return tuple(seen)


def bearer_token(authorization: str | None) -> bytes | None:
    """The token of an `Authorization: Bearer <token>` value; None for anything else."""
    if not authorization or authorization[:7].lower() != BEARER_PREFIX:
        return None
    token = authorization[7:].strip()
    if not token:
        return None
    try:
        return token.encode("ascii")
    except UnicodeEncodeError:  # cannot match any configured token (all are ASCII)
        return None


def _matches_any(presented: bytes, configured: tuple[bytes, ...]) -> bool:
    """Constant-time membership: every configured token is compared, no early exit."""
    found = False
    for token in configured:
        found |= hmac.compare_digest(presented, token)
    return found


class TokenGuard:
    """Decides whether a presented bearer token grants an access level."""

    __slots__ = ("_api", "_admin")

    def __init__(self, api_tokens: Iterable[str] = (), admin_tokens: Iterable[str] = ()) -> None:
        self._admin = _clean(admin_tokens, "admin")
        self._api = _clean(api_tokens, "API")

    def __repr__(self) -> str:  # never the tokens themselves
        return f"TokenGuard(api_tokens={len(self._api)}, admin_tokens={len(self._admin)})"

    @property
    def api_required(self) -> bool:
        """Whether API routes need a token (some API token is configured)."""
        return bool(self._api)

    @property
    def admin_enabled(self) -> bool:
        """Whether the admin routes can be used at all (some admin token is configured)."""
        return bool(self._admin)

    def check(self, access: Access, authorization: str | None) -> None:
        """Return when `authorization` grants `access`; raise Unauthorized or Forbidden."""
        if access == Access.OPEN:
            return
        if access == Access.API:
            if not self._api:
                return
            presented = bearer_token(authorization)
            if presented is None:
                raise Unauthorized(
                    "this route needs a bearer token (Authorization: Bearer <token>)"
                )
            # Both lists are always compared, so an admin token costs the same as an API one.
            is_api = _matches_any(presented, self._api)
            is_admin = _matches_any(presented, self._admin)
            if not (is_api or is_admin):
                raise Unauthorized("the bearer token is not valid")
            return
        if not self._admin:
            raise Forbidden(ADMIN_HOW_TO_ENABLE)
        presented = bearer_token(authorization)
        if presented is None:
            raise Unauthorized(
                "this route needs an admin bearer token (Authorization: Bearer <token>)"
            )
        is_admin = _matches_any(presented, self._admin)
        is_api = _matches_any(presented, self._api)
        if is_admin:
            return
        if is_api:
            raise Forbidden("this route needs an admin token; the token given is an API token")
        raise Unauthorized("the bearer token is not valid")
