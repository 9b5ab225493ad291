"""Reading the files a Compose project names, defensively: regular files only, bounded size,
strict text decoding with the position of the first bad byte.

Every function raises ValueError with a message fit for the user (the caller adds which key
named the file). A FIFO or a device given as a Compose file would block or never end, so only
regular files are read; a path with a NUL byte cannot name a file at all.
"""

from __future__ import annotations

import codecs
import os
import stat

__all__ = ["MAX_COMPOSE_BYTES", "decode_text", "read_bytes", "read_text"]

# Far above any real stack file (a 1,000-service file is about 200 KiB), far below memory.
MAX_COMPOSE_BYTES = 16 * 1024 * 1024

_BOMS = ((codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF16_LE, "utf-16-le"),
         (codecs.BOM_UTF16_BE, "utf-16-be"))


def read_bytes(path: str, limit: int) -> bytes:
    """The content of the regular file `path`, refusing anything larger than `limit` bytes.

    ValueError says why, without the path (the caller names the file and its role)."""
    if "\0" in path:
        raise ValueError("the path contains a NUL byte")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise ValueError(exc.strerror or str(exc)) from None
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise ValueError("it is a directory")
        if not stat.S_ISREG(info.st_mode):
            raise ValueError("not a regular file (a FIFO, device or socket is refused: "
                             "reading it might never end)")
        if info.st_size > limit:
            raise ValueError(f"{info.st_size} bytes, more than the limit of {limit}")
        chunks: list[bytes] = []
        size = 0
        while True:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            size += len(chunk)
            if size > limit:
                raise ValueError(f"more than the limit of {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)
    except OSError as exc:
        raise ValueError(exc.strerror or str(exc)) from None
    finally:
        os.close(fd)


def decode_text(data: bytes, *, utf16: bool = False) -> str:
    """Bytes as text: UTF-8 (a BOM is dropped), or UTF-16 with a BOM when `utf16` (YAML
    readers accept it). A bad byte is reported with its line and column."""
    encoding = "utf-8"
    for bom, codec in _BOMS:
        if data.startswith(bom) and (utf16 or codec == "utf-8"):
            data, encoding = data[len(bom):], codec
            break
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        if encoding != "utf-8":
            raise ValueError(f"not valid {encoding.upper()}: {exc.reason}") from None
        before = data[:exc.start]
        line = before.count(b"\n") + 1
        column = exc.start - (before.rfind(b"\n") + 1) + 1
        raise ValueError(f"not valid UTF-8 at line {line}, column {column} (byte "
                         f"0x{data[exc.start]:02x}); save it as UTF-8") from None


def read_text(path: str, limit: int = MAX_COMPOSE_BYTES, *, utf16: bool = False) -> str:
    """`read_bytes` then `decode_text`."""
    return decode_text(read_bytes(path, limit), utf16=utf16)
