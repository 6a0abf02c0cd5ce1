"""One client sending poison, eight sending real digits, at once and for seconds: every poisoned upload
gets its own 4xx, and not one of the valid requests fails, whatever it was batched with."""

from __future__ import annotations

import threading
import time
import zlib
from collections import Counter

import httpx
import pytest

from tests.helpers import EXAMPLES, large_png, png_chunk, png_declaring

pytestmark = pytest.mark.slow
DIGIT = (EXAMPLES / "digit_7.png").read_bytes()
POISON = [
    ("file", png_declaring(8, 8, png_chunk(b"pHYs", b"\x01")), None),
    ("file", png_declaring(8, 8, png_chunk(b"zTXt", b"k\x00\x00" + zlib.compress(b"a" * 2_000_000))), None),
    ("file", DIGIT[: len(DIGIT) // 2], None),
    ("file", png_declaring(100_000, 100_000), None),
    ("file", large_png(6000, 6000), None),  # a real 36 MP image: a heavy worker's job, not the batch's
    ("file", DIGIT, "b" * 300),  # a boundary longer than RFC 2046 allows
    ("image", DIGIT, None),
]


def test_a_poisoner_fails_no_valid_request(fuzzed_url):
    stop = threading.Event()
    valid: Counter[int] = Counter()
    poisoned: Counter[int] = Counter()

    def client() -> None:
        with httpx.Client(base_url=fuzzed_url, timeout=30) as http:
            while not stop.is_set():
                response = http.post("/predict", files={"file": ("7.png", DIGIT)})
                right = response.json().get("predictions", [{}])[0].get("label") == "7"
                valid[response.status_code if right else -1] += 1

    def poisoner() -> None:
        with httpx.Client(base_url=fuzzed_url, timeout=30) as http:
            while not stop.is_set():
                for field, data, boundary in POISON:
                    if boundary is None:
                        response = http.post("/predict", files={field: ("x.png", data)})
                    else:
                        part = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; "
                                'filename="x"\r\n\r\n')
                        body = part.encode() + data + f"\r\n--{boundary}--\r\n".encode()
                        response = http.post("/predict", content=body,
                                             headers={"content-type": f"multipart/form-data; boundary={boundary}"})
                    poisoned[response.status_code] += 1

    threads = [threading.Thread(target=client) for _ in range(8)] + [threading.Thread(target=poisoner)]
    for thread in threads:
        thread.start()
    time.sleep(6)
    stop.set()
    for thread in threads:
        thread.join()
    assert set(valid) == {200} and valid[200] > 500, valid  # every valid request answered, and right
    assert poisoned.total() >= len(POISON), poisoned
    assert all(400 <= status < 500 or status == 200 for status in poisoned), poisoned  # 200: the 36 MP image
    print(f"valid {dict(valid)}; poisoned {dict(poisoned)}")
