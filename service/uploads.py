"""The image inside an upload: the ``file`` field of a multipart/form-data body, or the body itself when it is
sent with an image Content-Type (``curl --data-binary @digit.png -H 'Content-Type: image/png'``), as
TorchServe and mosec take images.

An inference worker parses the form, not FastAPI on the event loop: that parse was half of what the server
process spent per request. The parser is ``multipart`` (Bottle's, a sans-I/O push parser that scans with
``bytes.find``): a small upload's form in 7 µs, where python-multipart, FastAPI's own, took 21 µs on the
worker that is lenet5's bottleneck (docs/PERFORMANCE.md). A raw body needs no parse."""

from __future__ import annotations

from multipart import MultipartError, MultipartSegment, PushMultipartParser, parse_options_header

from .errors import InvalidParameter

FIELD = "file"
RAW_TYPES = ("image/*", "application/octet-stream")  # a body that is the image itself
MAX_BOUNDARY = 70  # RFC 2046 §5.1.1; every browser's and HTTP library's boundary is shorter


def image_bytes(content_type: str, body: bytes) -> bytes:
    """The image's bytes: the body itself under an image (or octet-stream) Content-Type, else the form's
    ``file`` part; InvalidParameter (422) saying what to send otherwise."""
    media_type, options = parse_options_header(content_type)
    if media_type.startswith("image/") or media_type == "application/octet-stream":
        return body
    boundary = options.get("boundary", "")
    if media_type != "multipart/form-data" or not boundary:
        raise InvalidParameter(f"send the image as multipart/form-data in the field '{FIELD}', or as the body "
                               f"with its image Content-Type (image/png, image/jpeg, …); "
                               f"got Content-Type {content_type or 'none'!r}")
    if len(boundary) > MAX_BOUNDARY:
        raise InvalidParameter(f"the multipart boundary is {len(boundary)} characters; RFC 2046 allows at most "
                               f"{MAX_BOUNDARY}")
    names: list[str] = []
    found: MultipartSegment | None = None
    chunks: list[bytes] = []
    try:
        with PushMultipartParser(boundary, len(body)) as parser:
            for event in parser.parse(body):
                if isinstance(event, MultipartSegment):
                    names.append(event.name or "")
                    found = event if found is None and event.name == FIELD else found
                elif event and found is not None and not found.complete:
                    chunks.append(event)
    except MultipartError as exc:
        raise InvalidParameter(f"the multipart/form-data body could not be parsed: {exc}") from None
    if found is None:
        others = f" (it has {', '.join(map(repr, names))})" if names else ""
        raise InvalidParameter(f"the form has no field '{FIELD}'{others}; send the image as the multipart field "
                               f"'{FIELD}'")
    if found.filename is None and "filename*=" not in found.header("Content-Disposition", ""):  # RFC 5987's form
        raise InvalidParameter(f"the form field '{FIELD}' must be a file upload (a part with a filename), "
                               "not a text value")
    return b"".join(chunks)
