"""The Open Inference Protocol (KServe V2) wire format: request and response bodies, JSON tensors and
the binary tensor data extension, and the classification extension; ``answer`` takes a request body to the
response body. It runs in an inference worker (JSON of megabytes would hold up the event loop); the
routes live in routes/v2.py.

Binary extension: the ``Inference-Header-Content-Length`` header says how many leading bytes of the body
are the JSON header; each input whose ``parameters.binary_data_size`` is set takes that many bytes of what
follows, in input order (little-endian, row-major). Responses use the same layout for the outputs asked for
in binary (``binary_data`` on an output, or ``binary_data_output`` on the request).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel, Field, ValidationError

from .errors import InvalidParameter
from .postprocessing import ranking

if TYPE_CHECKING:
    from .manifest import Manifest

HEADER_LENGTH = "Inference-Header-Content-Length"
FP32 = np.dtype("<f4")  # every model here takes and returns float32
MAX_DIMENSIONS = 8
MAX_ELEMENTS = 1 << 28  # 1 GiB of FP32: far beyond any body the size limit lets through
_LENGTH = re.compile(r"[0-9]{1,12}")


class TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int]


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]


class RepositoryEntry(BaseModel):
    name: str
    version: str
    state: str
    reason: str = ""


class RequestInput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] = Field(default_factory=dict)
    data: list[Any] | None = None


class RequestOutput(BaseModel):
    name: str
    parameters: dict[str, Any] = Field(default_factory=dict)


class InferenceRequest(BaseModel):
    id: str | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)
    inputs: list[RequestInput] = Field(min_length=1)
    outputs: list[RequestOutput] | None = None


class ResponseOutput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] | None = None
    data: list[Any] | None = None


class InferenceResponse(BaseModel):
    model_name: str
    model_version: str
    id: str | None = None
    outputs: list[ResponseOutput]


class ErrorResponse(BaseModel):
    error: str


def header_size(body: bytes, header_length: str | None) -> int:
    """How many leading bytes of the body are the JSON header (all of them without the binary extension)."""
    if header_length is None:
        return len(body)
    if not _LENGTH.fullmatch(header_length) or int(header_length) > len(body):
        raise InvalidParameter(f"{HEADER_LENGTH} must be the byte length of the JSON header "
                               f"(at most the body's {len(body)} bytes); got {header_length!r}")
    return int(header_length)


def parse_request(body: bytes, header_length: str | None) -> tuple[InferenceRequest, bytes]:
    """The JSON header and the binary section that follows it (empty without the extension)."""
    split = header_size(body, header_length)
    try:
        request = InferenceRequest.model_validate(json.loads(body[:split]))
    except RecursionError:
        raise InvalidParameter("the inference request's JSON is nested too deeply") from None
    except (ValueError, ValidationError) as exc:
        raise InvalidParameter(f"the inference request is not valid JSON of the protocol's shape: {exc}") from None
    return request, body[split:]


def input_tensors(request: InferenceRequest, binary: bytes) -> dict[str, np.ndarray]:
    """Every input as a float32 numpy array of its declared shape."""
    tensors, offset = {}, 0
    for tensor in request.inputs:
        if tensor.datatype != "FP32":
            raise InvalidParameter(f"input {tensor.name!r}: datatype must be FP32; got {tensor.datatype!r}")
        if len(tensor.shape) > MAX_DIMENSIONS or any(d < 0 for d in tensor.shape):
            raise InvalidParameter(f"input {tensor.name!r}: shape {tensor.shape[:MAX_DIMENSIONS + 1]} must have at "
                                   f"most {MAX_DIMENSIONS} dimensions, none negative")
        count = math.prod(tensor.shape)  # Python integers: no overflow to a small number
        if count > MAX_ELEMENTS or max(tensor.shape, default=0) > MAX_ELEMENTS:
            raise InvalidParameter(f"input {tensor.name!r}: shape {tensor.shape} holds {count:,} values, "
                                   f"over {MAX_ELEMENTS:,}")
        size = tensor.parameters.get("binary_data_size")
        if size is not None:
            if not isinstance(size, int) or size != count * FP32.itemsize or offset + size > len(binary):
                raise InvalidParameter(f"input {tensor.name!r}: binary_data_size {size} does not fit shape "
                                       f"{tensor.shape} of {tensor.datatype} or the {len(binary) - offset} bytes left "
                                       "in the body")
            array = np.frombuffer(binary, dtype=FP32, count=count, offset=offset)
            offset += size
        elif tensor.data is not None:
            try:
                array = np.asarray(tensor.data, dtype=FP32).reshape(-1)
            except (ValueError, TypeError):
                raise InvalidParameter(f"input {tensor.name!r}: data must be numbers of datatype "
                                       f"{tensor.datatype}") from None
            if array.size != count:
                raise InvalidParameter(f"input {tensor.name!r}: shape {tensor.shape} needs {count} values; "
                                       f"got {array.size}")
        else:
            raise InvalidParameter(f"input {tensor.name!r} has neither data nor parameters.binary_data_size")
        tensors[tensor.name] = array.reshape(tensor.shape)
    if offset != len(binary):
        raise InvalidParameter(f"{len(binary) - offset} bytes after the JSON header belong to no input")
    return tensors


def classification(values: np.ndarray, k: int, labels: list[str]) -> np.ndarray:
    """The classification extension: per row, the top ``k`` as ``"<value>:<index>:<label>"`` strings."""
    order = ranking(values)[:, :k]
    return np.array([[f"{row[i]:f}:{i}:{labels[i]}" for i in top] for row, top in zip(values, order, strict=True)],
                    dtype=object)


def _binary(array: np.ndarray) -> bytes:
    if array.dtype == object:  # BYTES: each element as a 4-byte little-endian length, then its bytes
        return b"".join(len(b).to_bytes(4, "little") + b for b in (str(s).encode() for s in array.reshape(-1)))
    return np.ascontiguousarray(array, dtype=FP32).tobytes()


def encode_response(model: str, version: str, request_id: str | None,
                    outputs: list[tuple[str, np.ndarray, bool]]) -> tuple[bytes, dict[str, str]]:
    """(name, array, as_binary) outputs → response body and headers."""
    described, chunks = [], []
    for name, array, as_binary in outputs:
        datatype = "BYTES" if array.dtype == object else "FP32"
        entry = ResponseOutput(name=name, shape=list(array.shape), datatype=datatype)
        if as_binary:
            chunk = _binary(array)
            entry.parameters = {"binary_data_size": len(chunk)}
            chunks.append(chunk)
        else:
            entry.data = array.reshape(-1).tolist()
        described.append(entry)
    header = InferenceResponse(model_name=model, model_version=version, id=request_id, outputs=described)
    body = header.model_dump_json(exclude_none=True).encode()
    if not chunks:
        return body, {"Content-Type": "application/json"}
    return body + b"".join(chunks), {"Content-Type": "application/octet-stream", HEADER_LENGTH: str(len(body))}


def model_input(manifest: Manifest, tensors: dict[str, np.ndarray], max_batch: int) -> np.ndarray:
    """The one input the model takes, of its shape, with 1 to ``max_batch`` rows of finite numbers."""
    spec = manifest.input
    if list(tensors) != [spec.name]:
        raise InvalidParameter(f"model {manifest.name} takes one input named {spec.name!r}; got {list(tensors)}")
    batch = tensors[spec.name]
    if batch.ndim != 4 or list(batch.shape[1:]) != spec.shape[1:] or not 1 <= len(batch) <= max_batch:
        raise InvalidParameter(f"input {spec.name!r} must have shape [N, {', '.join(map(str, spec.shape[1:]))}] "
                               f"with 1 <= N <= {max_batch}; got {list(batch.shape)}")
    if not np.isfinite(batch).all():
        raise InvalidParameter(f"input {spec.name!r} holds NaN or infinite values")
    return np.ascontiguousarray(batch)


def select_outputs(parsed: InferenceRequest, by_name: dict[str, np.ndarray],
                   manifest: Manifest) -> list[tuple[str, np.ndarray, bool]]:
    """The outputs asked for (all of them when none are named), in binary where asked, with the
    classification extension applied where an output asks for it."""
    binary_default = bool(parsed.parameters.get("binary_data_output", False))
    if parsed.outputs is None:
        return [(name, array, binary_default) for name, array in by_name.items()]
    selected = []
    for wanted in parsed.outputs:
        if wanted.name not in by_name:
            raise InvalidParameter(f"model {manifest.name} has no output {wanted.name!r}; "
                                   f"its outputs are {list(by_name)}")
        array = by_name[wanted.name]
        k = wanted.parameters.get("classification")
        if k is not None:
            if array.ndim != 2 or not isinstance(k, int) or k < 1:
                raise InvalidParameter(f"classification needs a positive integer on the "
                                       f"{manifest.outputs.logits.name!r} output; got {k!r} on {wanted.name!r}")
            array = classification(array, min(k, array.shape[1]), manifest.labels)
        selected.append((wanted.name, array, bool(wanted.parameters.get("binary_data", binary_default))))
    return selected


Run = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]  # model input → (logits, features)


def answer(manifest: Manifest, body: bytes, header_length: str | None, max_batch: int,
           run: Run) -> tuple[bytes, dict[str, str]]:
    """An inference request's body → its response body and headers (InvalidParameter: a 400 in the protocol)."""
    parsed, binary = parse_request(body, header_length)
    logits, features = run(model_input(manifest, input_tensors(parsed, binary), max_batch))
    by_name = {manifest.outputs.logits.name: logits, manifest.outputs.features.name: features}
    return encode_response(manifest.name, manifest.version, parsed.id, select_outputs(parsed, by_name, manifest))
