"""Bytes to text: the encoding of a text file (a BOM, UTF-8, UTF-16 without a BOM, what HTML declares, else latin-1
with a warning), binary files refused, and an EPUB chapter's markup decoded."""

from __future__ import annotations

import codecs
import re
import warnings

from ..errors import DocumentError
from .base import EncodingFallbackWarning

# Longest BOM first: the UTF-32 LE BOM begins with the UTF-16 LE one.
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32-le", "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32-be", "utf-32"),
    (codecs.BOM_UTF8, "utf-8", "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16-le", "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16-be", "utf-16"),
)
# C0 controls other than tab, newline, vertical tab, form feed and carriage return, plus DEL.
_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1f\x7f]")
_BINARY_SAMPLE_CHARS = 65536
_BINARY_CONTROL_RATIO = 0.1


def decode(data: bytes, source: str, declared: str | None = None) -> tuple[str, str]:
    """The text and the name of its encoding.

    A BOM decides (and a file that contradicts its BOM is undecodable); else UTF-8; else the encoding an
    HTML file declares; else latin-1, which decodes any bytes, with an EncodingFallbackWarning.
    """
    for bom, codec, name in _BOMS:
        if data.startswith(bom):
            try:
                text = data[len(bom):].decode(codec)
            except UnicodeDecodeError as exc:
                label = name.removesuffix("-sig").upper()
                raise DocumentError(source, f"undecodable: starts with a {label} byte order mark but is not "
                                            f"valid {label} ({exc.reason} at byte {exc.start})") from exc
            reject_binary(text, source)
            return text, name
    if b"\x00" in data:
        utf16 = _utf16_without_bom(data)
        if utf16 is None:
            raise DocumentError(source, "binary file (contains NUL bytes), not text")
        reject_binary(utf16[0], source)
        return utf16
    try:
        text, encoding = data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        text, encoding = _decode_declared(data, declared)
    reject_binary(text, source)
    if encoding == "latin-1":
        warnings.warn(f"{source}: not valid UTF-8 and no byte order mark; decoded as latin-1, "
                      "so some characters may be wrong", EncodingFallbackWarning, stacklevel=4)
    return text, encoding


def _utf16_without_bom(data: bytes) -> tuple[str, str] | None:
    """UTF-16 text without a byte order mark, or None. Text in a Latin or Cyrillic script has a NUL in the high byte
    of most characters, so the NULs of a sample fall almost all at odd offsets (little-endian) or even ones (big-
    endian); binary data has them anywhere. The whole file must then decode, and `_reject_binary` still applies."""
    sample = data[:4096]
    if len(data) % 2 or len(sample) < 4:
        return None
    even, odd = sample[0::2].count(0), sample[1::2].count(0)
    pairs = len(sample) // 2
    for codec, nuls, other in (("utf-16-le", odd, even), ("utf-16-be", even, odd)):
        if nuls >= pairs // 4 and other <= nuls // 50:
            try:
                return data.decode(codec), codec
            except UnicodeDecodeError:
                return None
    return None


def _decode_declared(data: bytes, declared: str | None) -> tuple[str, str]:
    if declared:
        try:
            name = codecs.lookup(declared).name
            if name not in ("utf-8", "latin-1", "iso8859-1"):
                return data.decode(name), name
        except (LookupError, UnicodeDecodeError):
            pass
    return data.decode("latin-1"), "latin-1"


def reject_binary(text: str, source: str) -> None:
    sample = text[:_BINARY_SAMPLE_CHARS]
    controls = len(_CONTROL.findall(sample))
    if sample and controls / len(sample) > _BINARY_CONTROL_RATIO:
        raise DocumentError(source, f"binary file ({controls / len(sample):.0%} control characters), not text")


def decode_markup(data: bytes | str) -> str:
    """An EPUB chapter's XHTML as a str: a BOM or the XML declaration decides, UTF-8 is the EPUB default."""
    if isinstance(data, str):
        return data
    for bom, codec, _name in _BOMS:
        if data.startswith(bom):
            return data[len(bom):].decode(codec, errors="replace")
    from bs4.dammit import EncodingDetector

    declared = EncodingDetector.find_declared_encoding(data, is_html=True)
    for encoding in ([declared] if declared else []) + ["utf-8"]:
        try:
            return data.decode(encoding)
        except (LookupError, UnicodeDecodeError):
            continue
    return data.decode("latin-1")
