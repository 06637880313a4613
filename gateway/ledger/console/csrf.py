"""CSRF defence for the console's forms (pure): a double-submit token bound to the identity.

The browser holds a random value in a ``__Host-`` cookie (Secure, HttpOnly,
SameSite=Strict); every form carries ``HMAC(secret, identity URI, cookie value)``.
A write is accepted only when the form's token is that HMAC of the cookie sent
with it and of the identity of the certificate on the connection: another site
can neither read the cookie nor forge the HMAC, and a token taken from one
user's page is worthless under another user's certificate.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

__all__ = ["COOKIE", "new_cookie_value", "token_for", "token_ok", "cross_site"]

COOKIE = b"__Host-hpf-csrf"


def new_cookie_value() -> str:
    """A fresh random cookie value (256 bits, URL-safe)."""
    return secrets.token_urlsafe(32)


def token_for(secret: bytes, identity_uri: str, cookie_value: str) -> str:
    """The form token for this identity and cookie value."""
    mac = hmac.new(secret, identity_uri.encode("utf-8") + b"\x1f" + cookie_value.encode("ascii", "replace"),
                   hashlib.sha256)
    return mac.hexdigest()


def token_ok(secret: bytes, identity_uri: str, cookie_value: str | None, token: str | None) -> bool:
    """Whether a write's form token matches its cookie and the identity making it."""
    if not cookie_value or not token or len(cookie_value) > 128 or len(token) != 64:
        return False
    return hmac.compare_digest(token_for(secret, identity_uri, cookie_value), token)


def cross_site(origin: str | None, fetch_site: str | None, own_host: str | None) -> bool:
    """Whether the request's own headers say it came from another site (refused before the token).

    ``Sec-Fetch-Site`` (sent by every current browser) must be ``same-origin`` or
    ``none`` when present; an ``Origin`` header, when present, must name this host.
    """
    if fetch_site is not None and fetch_site not in ("same-origin", "none"):
        return True
    if origin is not None:
        if origin == "null" or own_host is None:
            return True
        bare = origin.split("://", 1)[-1]
        return bare.lower() != own_host.lower()
    return False
