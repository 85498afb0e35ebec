"""Access control shared by every transport: access levels, bearer tokens, the HTTP guard."""

from app.security.tokens import Access, InvalidTokenError, TokenGuard, bearer_token

__all__ = ["Access", "InvalidTokenError", "TokenGuard", "bearer_token"]
