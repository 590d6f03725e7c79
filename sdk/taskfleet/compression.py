"""Message body compression with the standard library's codecs: ``gzip``, ``zlib``, ``bz2`` and ``lzma``.

``App(compression="gzip")`` (or ``apply_async(compression=...)``) compresses the serialized envelope; the codec's
name goes in the message's framing line (docs/protocol.md), so a worker knows how to inflate the body before it
deserializes anything. ``max_message_bytes`` limits the compressed bytes on the wire; ``max_decompressed_bytes``
limits what a body may inflate to, and ``decompress`` stops as soon as the output passes it, so a decompression
bomb (a small message that inflates to gigabytes) costs a worker at most that much memory.

Celery's (kombu's) aliases are accepted and mean the codec of the same family: ``bzip2`` is ``bz2``, ``xz`` is
``lzma``. Unlike kombu, ``gzip`` is the gzip format (RFC 1952) and ``zlib`` the zlib format (RFC 1950).
"""

from __future__ import annotations

import bz2
import lzma
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from taskfleet.errors import ConfigurationError, DecodeError

GZIP = "gzip"
ZLIB = "zlib"
BZ2 = "bz2"
LZMA = "lzma"
#: The codec names ``compression=`` takes (``ALIASES`` maps Celery's other names onto them).
CODECS = (GZIP, ZLIB, BZ2, LZMA)
ALIASES = {"bzip2": BZ2, "xz": LZMA}
#: zlib's window bits for each format: 16 + 15 reads and writes a gzip header, 15 a zlib header.
_GZIP_WBITS = 16 + zlib.MAX_WBITS
#: Output asked of a decompressor per step: the buffer grows to at most the limit, one step at a time.
_STEP_BYTES = 256 * 1024
#: Most memory an lzma decoder may take (its dictionary, chosen by whoever compressed the body): 128 MiB decodes
#: every preset (``-9e`` needs about 65 MiB), and a body asking for more is refused instead of allocated.
_LZMA_MEMLIMIT_BYTES = 128 * 1024 * 1024


class DecompressionBomb(DecodeError):
    """A compressed message body inflates to more than ``max_decompressed_bytes``; it was not inflated further."""


class _Decompressor(Protocol):
    """What ``bz2.BZ2Decompressor`` and ``lzma.LZMADecompressor`` share."""

    @property
    def eof(self) -> bool: ...

    @property
    def needs_input(self) -> bool: ...

    @property
    def unused_data(self) -> bytes: ...

    def decompress(self, data: bytes, max_length: int = -1) -> bytes: ...


@dataclass(frozen=True, slots=True)
class _Codec:
    compress: Callable[[bytes], bytes]
    decompress: Callable[[bytes, int], bytes]


def compression_name(name: str) -> str:
    """The codec ``name`` stands for (an alias read as its codec); anything else is a ``ConfigurationError`` that
    lists the known ones."""
    if isinstance(name, str):
        canonical = ALIASES.get(name.lower(), name.lower())
        if canonical in CODECS:
            return canonical
    raise ConfigurationError(f"unknown compression {name!r}; choose one of {', '.join(CODECS)} "
                             f"(or None for no compression)")


def check_compression(name: str | None) -> str | None:
    """``compression_name(name)``, None passed through (no compression)."""
    return None if name is None else compression_name(name)


def compress(name: str, data: bytes) -> bytes:
    """``data`` compressed with codec ``name`` (see ``CODECS``)."""
    return _CODECS[compression_name(name)].compress(data)


def decompress(name: str, data: bytes, *, max_bytes: int) -> bytes:
    """``data`` inflated with codec ``name``. Raises ``DecompressionBomb`` as soon as the output would pass
    ``max_bytes`` (never inflating more than ``max_bytes`` + one step), and ``DecodeError`` for a body the codec
    cannot read (corrupt, truncated, or with data after its end)."""
    codec = _CODECS.get(name)
    if codec is None:
        raise DecodeError(f"malformed message: unknown compression {name!r}")
    try:
        return codec.decompress(data, max_bytes)
    except DecodeError:
        raise
    except (zlib.error, OSError, EOFError, lzma.LZMAError, ValueError) as exc:
        raise DecodeError(f"malformed message: cannot decompress its {name} body: {exc}") from exc


def _bomb(name: str, max_bytes: int) -> DecompressionBomb:
    return DecompressionBomb(f"decompression bomb: the {name} body inflates to more than max_decompressed_bytes="
                             f"{max_bytes}; it was not inflated further")


def _inflate_zlib(wbits: int, name: str) -> Callable[[bytes, int], bytes]:
    def inflate(data: bytes, max_bytes: int) -> bytes:
        inflater = zlib.decompressobj(wbits)
        out = bytearray(inflater.decompress(data, _STEP_BYTES))
        while not inflater.eof:
            if len(out) > max_bytes:
                raise _bomb(name, max_bytes)
            # zlib hands back the input it did not read yet (``unconsumed_tail``); output it holds comes with b"".
            tail = inflater.unconsumed_tail
            step = inflater.decompress(tail, _STEP_BYTES)
            if not step and not tail and not inflater.eof:
                raise DecodeError(f"malformed message: its {name} body is truncated")
            out += step
        return _whole(out, inflater.unused_data, name, max_bytes)

    return inflate


def _inflate_stream(factory: Callable[[], _Decompressor], name: str) -> Callable[[bytes, int], bytes]:
    def inflate(data: bytes, max_bytes: int) -> bytes:
        inflater = factory()
        out = bytearray(inflater.decompress(data, _STEP_BYTES))
        while not inflater.eof:
            if len(out) > max_bytes:
                raise _bomb(name, max_bytes)
            if inflater.needs_input:  # bz2 and lzma keep unread input themselves: none left means cut short
                raise DecodeError(f"malformed message: its {name} body is truncated")
            out += inflater.decompress(b"", _STEP_BYTES)
        return _whole(out, inflater.unused_data, name, max_bytes)

    return inflate


def _whole(out: bytearray, unused: bytes, name: str, max_bytes: int) -> bytes:
    """The inflated body, once its codec reached the end of the stream: still within ``max_bytes``, and nothing
    after it."""
    if len(out) > max_bytes:
        raise _bomb(name, max_bytes)
    if unused:
        raise DecodeError(f"malformed message: data after the end of its {name} body")
    return bytes(out)


def _gzip(data: bytes) -> bytes:
    packer = zlib.compressobj(6, zlib.DEFLATED, _GZIP_WBITS)
    return packer.compress(data) + packer.flush()


_CODECS: dict[str, _Codec] = {
    GZIP: _Codec(_gzip, _inflate_zlib(_GZIP_WBITS, GZIP)),
    ZLIB: _Codec(zlib.compress, _inflate_zlib(zlib.MAX_WBITS, ZLIB)),
    BZ2: _Codec(bz2.compress, _inflate_stream(bz2.BZ2Decompressor, BZ2)),
    LZMA: _Codec(lzma.compress, _inflate_stream(lambda: lzma.LZMADecompressor(memlimit=_LZMA_MEMLIMIT_BYTES), LZMA)),
}
