"""POST /predict on real digits, through the real app and ONNX Runtime."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from pydantic import ValidationError
from starlette.requests import Request

from service.routes.predict import PredictQuery, predict_query
from tests.helpers import SHIPPED, encode, manifest, upload

MNIST_MODELS = [m for m in SHIPPED if manifest(m)["metrics"]["dataset"] == "mnist"]
RGB_MODELS = [m for m in SHIPPED if manifest(m)["metrics"]["dataset"] == "placed"]


def ten_per_class(labels: np.ndarray, n: int = 10) -> np.ndarray:
    return np.concatenate([np.flatnonzero(labels == c)[:n] for c in range(10)])


@pytest.mark.parametrize("model", MNIST_MODELS)
def test_mnist_models_classify_real_digits(client, mnist_test, model):
    picks = ten_per_class(mnist_test.labels)
    light_right = dark_right = 0
    for i in picks:
        digit, label = mnist_test.images[i, 0], str(mnist_test.labels[i])
        body = client.post(f"/predict?model={model}&top_k=3", files=upload(encode(digit))).json()
        light_right += body["predictions"][0]["label"] == label
        assert not body["inverted"]
        # The same digit as a person would scan it: dark ink on white paper, larger, as JPEG.
        page = Image.fromarray(255 - digit).resize((140, 140), Image.Resampling.BICUBIC)
        scan = upload(encode(np.asarray(page), "JPEG"), "d.jpg", "image/jpeg")
        body = client.post(f"/predict?model={model}", files=scan).json()
        dark_right += body["predictions"][0]["label"] == label
        assert body["inverted"]
    assert light_right / len(picks) >= 0.93  # 100 digits: the test split's 96.8–98.8 %, give or take a sample's luck
    assert dark_right / len(picks) >= 0.93


@pytest.mark.parametrize("model", RGB_MODELS)
def test_rgb_models_classify_placed_digits(client, placed_test, model):
    picks = ten_per_class(placed_test.labels)
    right = sum(
        client.post(f"/predict?model={model}", files=upload(encode(placed_test.images[i]))).json()["predictions"][0][
            "label"] == str(placed_test.labels[i])
        for i in picks
    )
    assert right / len(picks) >= 0.9


def test_response_shape_and_probabilities(client, mnist_test):
    body = client.post("/predict?model=lenet5&top_k=10", files=upload(encode(mnist_test.images[0, 0]))).json()
    assert body["model"] == "lenet5" and body["version"] == "1"
    assert body["provider"] == "CPUExecutionProvider"
    probabilities = [p["probability"] for p in body["predictions"]]
    assert len(probabilities) == 10 and abs(sum(probabilities) - 1) < 1e-6
    assert probabilities == sorted(probabilities, reverse=True)
    assert sorted(p["index"] for p in body["predictions"]) == list(range(10))
    timings = body["timings"]
    assert 0 < timings["inference_ms"] <= timings["total_ms"]


def test_calibrated_probabilities_and_the_unsure_judgement(client, mnist_test):
    """Probabilities use the manifest's temperature; an answer below the validation threshold is flagged,
    with the two likeliest labels; a clear digit is not."""
    calibration = manifest("lenet5")["calibration"]
    clear = client.post("/predict?model=lenet5", files=upload(encode(mnist_test.images[1, 0]))).json()
    assert clear["confidence"] == {"unsure": False, "probability": clear["predictions"][0]["probability"],
                                   "unsure_below": calibration["unsure_below"],
                                   "message": f"looks like {clear['predictions'][0]['label']}"}
    # A 1 and a 7 drawn over each other: a person would hesitate too.
    ones, sevens = (np.flatnonzero(mnist_test.labels == d) for d in (1, 7))
    blend = np.maximum(mnist_test.images[ones[3], 0], mnist_test.images[sevens[3], 0])
    mixed = client.post("/predict?model=lenet5", files=upload(encode(blend))).json()
    first, second = (p["label"] for p in mixed["predictions"][:2])
    assert mixed["confidence"]["probability"] < calibration["unsure_below"]
    assert mixed["confidence"] | {"probability": 0} == {
        "unsure": True, "probability": 0, "unsure_below": calibration["unsure_below"],
        "message": f"not sure: looks like {first} or {second}"}


def test_default_model_and_top_k(client, settings, mnist_test):
    body = client.post("/predict?top_k=2", files=upload(encode(mnist_test.images[0, 0]))).json()
    assert body["model"] == settings.default_model and len(body["predictions"]) == 2


@pytest.mark.parametrize("query", [b"", b"model=lenet5&top_k=2", b"top_k=2&top_k=3", b"model=res%6Eet_small&x=1",
                                   b"model=a+b", b"version=&model=lenet5", b"model=%E9", b"&&top_k=7&"])
def test_the_query_is_read_as_starlette_reads_it(query):
    def outcome(read):
        try:
            return read()
        except ValidationError as exc:
            return exc.errors(include_url=False)

    params = Request({"type": "http", "query_string": query}).query_params
    assert outcome(lambda: predict_query(query)) == outcome(lambda: PredictQuery.model_validate(dict(params)))


def test_an_invalid_query_is_refused_every_time_and_never_kept(client, mnist_test):
    predict_query.cache_clear()
    for _ in range(2):
        with pytest.raises(ValidationError, match="top_k"):
            predict_query(b"top_k=0")
        answer = client.post("/predict?top_k=0", files=upload(encode(mnist_test.images[0, 0])))
        assert answer.status_code == 422 and "top_k" in answer.json()["detail"]
    assert predict_query.cache_info().currsize == 0
    assert client.post("/predict?top_k=3", files=upload(encode(mnist_test.images[0, 0]))).status_code == 200
    assert client.post("/predict?top_k=3", files=upload(encode(mnist_test.images[0, 0]))).status_code == 200
    assert predict_query.cache_info().hits >= 1


@pytest.mark.parametrize("fmt,mime", [("BMP", "image/bmp"), ("WEBP", "image/webp"), ("GIF", "image/gif"),
                                      ("JPEG", "image/jpeg")])
def test_accepted_formats(client, mnist_test, fmt, mime):
    index = int(np.flatnonzero(mnist_test.labels == 3)[0])
    image = upload(encode(mnist_test.images[index, 0], fmt), f"d.{fmt.lower()}", mime)
    body = client.post("/predict?model=lenet5", files=image).json()
    assert body["predictions"][0]["label"] == "3"


def test_gif_uses_the_first_frame(client, mnist_test):
    import io

    def label_of(data: bytes, mime: str = "image/png") -> str:
        answer = client.post("/predict?model=mnist_cnn_b", files=upload(data, "f", mime)).json()
        return answer["predictions"][0]["label"]

    first, second = (mnist_test.images[mnist_test.typical(d), 0] for d in (7, 1))
    assert label_of(encode(first)) != label_of(encode(second))
    buffer = io.BytesIO()
    Image.fromarray(first).save(buffer, "GIF", save_all=True, append_images=[Image.fromarray(second)] * 2)
    assert label_of(buffer.getvalue(), "image/gif") == label_of(encode(first))


def test_exif_orientation_is_applied(client, mnist_test):
    """A phone photo stored sideways with an EXIF 'rotate' tag is classified as the upright digit."""
    import io

    def jpeg(image: Image.Image, **save: object) -> bytes:
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=95, **save)
        return buffer.getvalue()

    def label_of(data: bytes) -> str:
        answer = client.post("/predict?model=mnist_cnn_b", files=upload(data, "p.jpg", "image/jpeg")).json()
        return answer["predictions"][0]["label"]

    sevens = np.flatnonzero(mnist_test.labels == 7)[:10]
    uprights = [Image.fromarray(255 - mnist_test.images[i, 0]).resize((112, 112)) for i in sevens]
    upright = next(u for u in uprights if label_of(jpeg(u)) == "7")
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # what the sensor wrote
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90° clockwise to display
    assert label_of(jpeg(stored, exif=exif.tobytes())) == "7"


def test_upload_routes_document_their_multipart_body(client):
    """The workers parse the form, so FastAPI does not; the OpenAPI page must still show the upload."""
    paths = client.get("/openapi.json").json()["paths"]
    for path in ("/predict", "/models/{name}/cam"):
        content = paths[path]["post"]["requestBody"]["content"]
        schema = content["multipart/form-data"]["schema"]
        assert schema["required"] == ["file"] and schema["properties"]["file"]["format"] == "binary"
        for raw in ("image/*", "application/octet-stream"):
            assert content[raw]["schema"]["format"] == "binary"
    # /predict validates its query as one model, and still documents each parameter with its limits.
    parameters = {p["name"]: p for p in paths["/predict"]["post"]["parameters"]}
    assert set(parameters) == {"model", "version", "top_k"} and all(p["in"] == "query" for p in parameters.values())
    assert parameters["model"]["schema"]["enum"] == SHIPPED
    assert parameters["top_k"]["schema"] == {"type": "integer", "minimum": 1, "maximum": 10, "default": 5}
    assert parameters["version"]["schema"]["anyOf"][0]["maxLength"] == 64


def test_the_file_is_found_among_other_form_fields(client, mnist_test):
    digit, label = encode(mnist_test.images[0, 0]), str(mnist_test.labels[0])
    response = client.post("/predict?model=lenet5", data={"note": "first", "other": "x"}, files=upload(digit))
    assert response.status_code == 200 and response.json()["predictions"][0]["label"] == label


@pytest.mark.parametrize("content_type", ["image/png", "image/jpeg", "application/octet-stream"])
def test_the_image_may_be_the_body_itself(client, mnist_test, content_type):
    """``curl --data-binary @digit.png -H 'Content-Type: image/png'``: the same answer as the form upload (the
    format is read from the bytes, so a declared type that differs from the file's is no matter)."""
    digit = encode(mnist_test.images[3, 0])
    raw = client.post("/predict?model=lenet5", content=digit, headers={"content-type": content_type})
    form = client.post("/predict?model=lenet5", files=upload(digit))
    assert raw.status_code == 200 and raw.json()["predictions"] == form.json()["predictions"]
    heatmap = client.post("/models/lenet5/cam?format=json", content=digit, headers={"content-type": content_type})
    assert heatmap.status_code == 200
