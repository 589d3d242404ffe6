"""What ``restore-serve`` does with a request's bytes, without Ray: check the size and content type,
refuse truncated or undecodable images, decode, encode the restored image for the response, and
map every error to an HTTP status and a JSON message.

The Ray Serve deployment (:mod:`restorekit.cluster.serve`) is thin glue over these functions, so
the rules below are tested without starting a server.

Rules:

* ``Content-Type`` ``image/png``, ``image/jpeg``, ``image/tiff``, ``image/webp`` or ``image/bmp``;
  ``application/octet-stream`` or none: the format is recognised from the first bytes. Anything
  else is ``415``. A body that is not the format its type names is ``400``.
* More than ``max_bytes`` (by ``Content-Length`` or by the bytes read) is ``413``; so is an image
  of more than ``max_pixels`` pixels (a PNG's header is read before decoding, so a small file that
  would decode to gigabytes is refused without decoding it).
* A PNG without its ``IEND`` chunk or a JPEG without an end marker after its last scan is
  truncated (``400``): their decoders would otherwise return a partly grey image without an error.
* The response is PNG (lossless) for every input except TIFF, which comes back as TIFF; 8/16 bits,
  gray/RGB/RGBA as the input had them. A JPEG therefore comes back as PNG: re-encoding the
  restored pixels as JPEG would add new compression artefacts to a restoration.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from restorekit.errors import InputError, NonFiniteOutputError, RestoreKitError, TileSizeError
from restorekit.runtime.imageio import decode_image, encode_image

DEFAULT_MAX_BYTES = 50 * 1024 * 1024
DEFAULT_MAX_PIXELS = 64_000_000

# Media type -> format name.
MEDIA_TYPES = {
    "image/png": "png",
    "image/jpeg": "jpeg",
    "image/jpg": "jpeg",
    "image/tiff": "tiff",
    "image/webp": "webp",
    "image/bmp": "bmp",
}
SNIFFED_TYPES = ("application/octet-stream", "")
# Format -> (suffix, media type) of files of that format; used by the client too.
FORMATS = {
    "png": (".png", "image/png"),
    "jpeg": (".jpg", "image/jpeg"),
    "tiff": (".tif", "image/tiff"),
    "webp": (".webp", "image/webp"),
    "bmp": (".bmp", "image/bmp"),
}
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_PNG_END = b"IEND\xaeB`\x82"  # the IEND chunk's type and CRC: the last 8 bytes of every PNG


class RequestError(InputError):
    """A request the server refuses; ``status`` is the HTTP status it answers with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class RequestLimits:
    """What one request may carry. ``None`` fields take the defaults.

    Attributes:
        max_bytes: largest request body (default 50 MiB).
        max_pixels: largest image, width x height (default 64 MP).
    """

    max_bytes: int | None = None
    max_pixels: int | None = None

    @property
    def bytes(self) -> int:
        return DEFAULT_MAX_BYTES if self.max_bytes is None else self.max_bytes

    @property
    def pixels(self) -> int:
        return DEFAULT_MAX_PIXELS if self.max_pixels is None else self.max_pixels


@dataclass(frozen=True)
class ImageRequest:
    """A decoded request: the image (RGB/RGBA/gray, 8 or 16 bits) and the format it came in."""

    image: np.ndarray
    format: str


def sniff_format(data: bytes | memoryview) -> str | None:
    """The image format of encoded bytes by their signature, or ``None``."""
    head = bytes(data[:12])
    if head.startswith(_PNG_MAGIC):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith((b"II*\x00", b"MM\x00*")):
        return "tiff"
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "webp"
    if head.startswith(b"BM"):
        return "bmp"
    return None


def format_for_content_type(content_type: str | None) -> str | None:
    """The format a ``Content-Type`` names; ``None`` when the body must be sniffed.

    Raises:
        RequestError: 415 for a type that is not an image format the server takes.
    """
    base = (content_type or "").split(";", 1)[0].strip().lower()
    if base in SNIFFED_TYPES:
        return None
    if base in MEDIA_TYPES:
        return MEDIA_TYPES[base]
    accepted = ", ".join(sorted({"image/png", "image/jpeg", "image/tiff", "image/webp"}))
    raise RequestError(
        415,
        f"unsupported content type {base!r}: send the image file's bytes as the body with "
        f"Content-Type {accepted} (or application/octet-stream)",
    )


def check_content_length(header: str | None, limits: RequestLimits) -> None:
    """Refuse a request whose declared length is over the limit before reading its body.

    Raises:
        RequestError: 413 over the limit, 400 for a malformed header.
    """
    if header is None:
        return
    try:
        length = int(header)
    except ValueError:
        raise RequestError(400, f"malformed Content-Length {header!r}") from None
    if length > limits.bytes:
        raise RequestError(413, _too_large(length, limits))


def check_body_size(size: int, limits: RequestLimits) -> None:
    """Refuse a body (or the part read so far) larger than the limit.

    Raises:
        RequestError: 413.
    """
    if size > limits.bytes:
        raise RequestError(413, _too_large(size, limits))


def _too_large(size: int, limits: RequestLimits) -> str:
    return (
        f"request body of {size / 2**20:.1f} MiB exceeds this server's limit of "
        f"{limits.bytes / 2**20:.1f} MiB (restore-serve --max-request-mb); restore large images "
        "locally with restore-run"
    )


def decode_request(
    body: bytes | memoryview, content_type: str | None, limits: RequestLimits | None = None
) -> ImageRequest:
    """Check and decode one request body.

    Args:
        body: the request body: an encoded image file.
        content_type: the request's ``Content-Type`` header (``None`` if absent).
        limits: size limits.

    Raises:
        RequestError: 415 wrong content type, 413 too large, 400 empty, truncated, undecodable
            or not the format the content type names.
    """
    limits = limits or RequestLimits()
    declared = format_for_content_type(content_type)
    check_body_size(len(body), limits)
    if len(body) == 0:
        raise RequestError(400, "empty request body: send the image file's bytes as the body")
    found = sniff_format(body)
    if found is None:
        raise RequestError(
            400,
            "the body is not a PNG, JPEG, TIFF, WebP or BMP file (unknown signature); send the "
            "image file's bytes unchanged",
        )
    if declared is not None and declared != found:
        raise RequestError(
            400,
            f"Content-Type says {declared.upper()} but the body is a {found.upper()} file; "
            f"send it as {FORMATS[found][1]}",
        )
    _check_complete(body, found)
    if found == "png":
        _check_png_size(body, limits)
    try:
        image = decode_image(body, f"the {found.upper()} body")
    except InputError as exc:
        raise RequestError(400, str(exc)) from None
    h, w = image.shape[:2]
    if h * w > limits.pixels:
        raise RequestError(413, _too_many_pixels(w, h, limits))
    return ImageRequest(image, found)


def _check_complete(body: bytes | memoryview, fmt: str) -> None:
    """Refuse PNG and JPEG files cut short (their decoders fill the missing rows with grey).

    A PNG must hold its ``IEND`` chunk; a JPEG its end marker after the last start-of-scan (an
    EXIF thumbnail has its own markers near the start, so that one does not count). Bytes some
    writers append after the end are allowed.
    """
    data = bytes(body)
    if fmt == "png" and data.rfind(_PNG_END) < 0:
        raise RequestError(
            400, "truncated PNG: the body ends before the PNG's IEND chunk; send the whole file"
        )
    if fmt == "jpeg" and data.rfind(b"\xff\xd9") < data.rfind(b"\xff\xda"):
        raise RequestError(
            400, "truncated JPEG: the body ends before the JPEG's end marker; send the whole file"
        )


def _check_png_size(body: bytes | memoryview, limits: RequestLimits) -> None:
    """Read width and height from the PNG header (IHDR, right after the signature)."""
    header = bytes(body[8:24])
    if len(header) < 16 or header[4:8] != b"IHDR":
        raise RequestError(400, "corrupt PNG: no IHDR header after the signature")
    w, h = struct.unpack(">II", header[8:16])
    if w * h > limits.pixels:
        raise RequestError(413, _too_many_pixels(w, h, limits))


def _too_many_pixels(w: int, h: int, limits: RequestLimits) -> str:
    return (
        f"a {w}x{h} image ({w * h / 1e6:.1f} MP) exceeds this server's limit of "
        f"{limits.pixels / 1e6:.1f} MP; restore it locally with restore-run"
    )


def response_format(request_format: str) -> str:
    """The format a restored image is returned in: TIFF for TIFF, else PNG (see module doc)."""
    return "tiff" if request_format == "tiff" else "png"


def encode_response(image: np.ndarray, request_format: str) -> tuple[bytes, str]:
    """The restored image encoded for the response, and its media type.

    Raises:
        InputError: the encoder refused the image.
    """
    suffix, media_type = FORMATS[response_format(request_format)]
    return encode_image(image, suffix), media_type


def error_status(exc: BaseException) -> tuple[int, str]:
    """The HTTP status and message for an error raised while handling a request.

    A refused request keeps its status; an image the model cannot take in one pass is 413, other
    input errors 400; NaN/Inf in the model's output and anything unexpected are the server's
    fault (500), with the message for the former and a generic one for the latter.
    """
    if isinstance(exc, RequestError):
        return exc.status, str(exc)
    if isinstance(exc, TileSizeError):
        return 413, str(exc)
    if isinstance(exc, NonFiniteOutputError):
        return 500, str(exc)
    if isinstance(exc, InputError):
        return 400, str(exc)
    if isinstance(exc, RestoreKitError):
        return 500, str(exc)
    return 500, f"internal error in restore-serve: {type(exc).__name__}; see the server's log"


def error_body(status: int, message: str) -> dict[str, object]:
    """The JSON document of an error response."""
    return {"error": message, "status": status}
