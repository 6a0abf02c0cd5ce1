"""The image inside an upload: the ``file`` field of a multipart/form-data body, or the body itself when it is
sent with an image Content-Type (``curl --data-binary @digit.png -H 'Content-Type: image/png'``), as
TorchServe and mosec take images.

python-multipart (the parser FastAPI uses) parses a form in an inference worker rather than FastAPI on the
event loop: that parse was half of what the server process spent per request. A raw body needs no parse."""

from __future__ import annotations

from python_multipart.multipart import MultipartParser, parse_options_header

from .errors import InvalidParameter

FIELD = "file"
RAW_TYPES = ("image/*", "application/octet-stream")  # a body that is the image itself


def image_bytes(content_type: str, body: bytes) -> bytes:
    """The image's bytes: the body itself under an image (or octet-stream) Content-Type, else the form's
    ``file`` part; InvalidParameter (422) saying what to send otherwise."""
    media_type, options = parse_options_header(content_type)
    if media_type.startswith(b"image/") or media_type == b"application/octet-stream":
        return body
    if media_type != b"multipart/form-data" or not options.get(b"boundary"):
        raise InvalidParameter(f"send the image as multipart/form-data in the field '{FIELD}', or as the body "
                               f"with its image Content-Type (image/png, image/jpeg, …); "
                               f"got Content-Type {content_type or 'none'!r}")
    parts: list[tuple[dict[bytes, bytes], list[bytes]]] = []
    header = [b"", b""]

    def on_header_end() -> None:
        parts[-1][0][header[0].lower()] = header[1]
        header[:] = [b"", b""]

    callbacks = {
        "on_part_begin": lambda: parts.append(({}, [])),
        "on_header_field": lambda data, start, end: header.__setitem__(0, header[0] + data[start:end]),
        "on_header_value": lambda data, start, end: header.__setitem__(1, header[1] + data[start:end]),
        "on_header_end": on_header_end,
        "on_part_data": lambda data, start, end: parts[-1][1].append(data[start:end]),
    }
    try:
        parser = MultipartParser(options[b"boundary"], callbacks)  # type: ignore[arg-type]
        parser.write(body)
        parser.finalize()
    except ValueError as exc:  # MultipartParseError, FormParserError (a boundary over 256 characters…)
        raise InvalidParameter(f"the multipart/form-data body could not be parsed: {exc}") from None
    names = []
    for headers, chunks in parts:
        _, disposition = parse_options_header(headers.get(b"content-disposition", b""))
        name = disposition.get(b"name", b"").decode("latin-1")
        if name == FIELD:
            if b"filename" not in disposition and b"filename*" not in disposition:
                raise InvalidParameter(f"the form field '{FIELD}' must be a file upload (a part with a filename), "
                                       "not a text value")
            return b"".join(chunks)
        names.append(name)
    found = f" (it has {', '.join(map(repr, names))})" if names else ""
    raise InvalidParameter(f"the form has no field '{FIELD}'{found}; send the image as the multipart field '{FIELD}'")
