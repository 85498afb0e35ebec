"""`{"b64": "..."}` values of TF Serving's JSON: both base64 alphabets, padding optional.

TF Serving decodes them with absl's unescaping, which takes the standard alphabet with or
without `=` padding; clients that build URLs or JSON by hand often send the web-safe alphabet
(`-` and `_`, RFC 4648 section 5), which Python's `b64decode` refused here with a 400. Both are
taken: the two alphabets share every other character, so one translation decodes either.
"""

from __future__ import annotations

import base64
import binascii

from app.errors import InvalidInput

_WEB_SAFE = bytes.maketrans(b"-_", b"+/")


def decode_b64(text: str, where: str) -> bytes:
    """The bytes of a base64 string in either alphabet; 400 naming `where` if it is not one."""
    try:
        data = text.encode("ascii").translate(_WEB_SAFE).rstrip(b"=")
        return base64.b64decode(data + b"=" * (-len(data) % 4), validate=True)
    except (UnicodeEncodeError, binascii.Error, ValueError) as exc:
        raise InvalidInput(f"{where}: invalid base64 in b64 value: {exc}") from exc
