"""Feed cursors: ``v<version>o<offset>``, the version a page came from and where the next starts.

The shape is a pattern in the OpenAPI document, so every cursor the document allows
can be read.
"""

from __future__ import annotations

import re

from cellwork import InvalidArgument

CURSOR_PATTERN = r"^v[0-9]{1,12}o[0-9]{1,5}$"
CURSOR = re.compile(CURSOR_PATTERN)


def encode_cursor(version: int, offset: int) -> str:
    return f"v{version}o{offset}"


def decode_cursor(cursor: str) -> int:
    """The offset a cursor points at; raises InvalidArgument for a malformed one."""
    if not CURSOR.match(cursor):
        raise InvalidArgument("malformed cursor")
    return int(cursor.rpartition("o")[2])
