"""The image inside an upload: the ``file`` field of a multipart/form-data body.

python-multipart (the parser FastAPI uses) parses it in an inference worker rather than FastAPI on the
event loop: that parse was half of what the server process spent per request."""

from __future__ import annotations

from python_multipart.multipart import MultipartParser, parse_options_header

from .errors import InvalidParameter

FIELD = "file"


def image_from_form(content_type: str, body: bytes) -> bytes:
    """The bytes of the form's ``file`` part; InvalidParameter (422) saying what to send otherwise."""
    media_type, options = parse_options_header(content_type)
    if media_type != b"multipart/form-data" or not options.get(b"boundary"):
        raise InvalidParameter(f"send the image as multipart/form-data, in the field '{FIELD}'; "
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
