"""PNG files built byte by byte: headers that declare any size without the pixels behind it.

The picture limits are checked on what a file's header declares, before anything is decoded;
these files let the tests declare 20,000 x 20,000 pixels (or 2**31 - 1 per side) in a few bytes.
"""

from __future__ import annotations

import struct
import zlib

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_chunk(kind: bytes, data: bytes) -> bytes:
    """One PNG chunk: length, kind, data, CRC."""
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def png_claiming(
    width: int,
    height: int,
    depth: int = 8,
    colour: int = 0,
    idat: bytes | None = zlib.compress(b"\0"),
) -> bytes:
    """A PNG whose header declares `width` x `height` (bit `depth`, `colour` type), with `idat`
    as its one data chunk (none when None): far fewer pixels than it claims."""
    header = png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0))
    data = b"" if idat is None else png_chunk(b"IDAT", idat)
    return PNG_SIGNATURE + header + data + png_chunk(b"IEND", b"")
