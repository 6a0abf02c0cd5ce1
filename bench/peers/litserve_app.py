"""LitServe: FastAPI front end, worker processes, batching. Its idiomatic image input: JSON with base64."""

from __future__ import annotations

import base64
import os

import litserve as ls

from bench.peers.work import Work


class Classify(ls.LitAPI):
    def setup(self, device: str) -> None:
        self.work = Work()

    def decode_request(self, request: dict) -> bytes:
        return base64.b64decode(request["image"])

    def batch(self, inputs: list[bytes]) -> list[bytes]:
        return inputs

    def predict(self, images: list[bytes]) -> list[dict]:
        return self.work.answers(images)

    def unbatch(self, output: list[dict]) -> list[dict]:
        return output

    def encode_response(self, output: dict) -> dict:
        return output


if __name__ == "__main__":
    api = Classify(max_batch_size=16, batch_timeout=0.001)
    server = ls.LitServer(api, accelerator="cpu", workers_per_device=int(os.environ.get("BENCH_WORKERS", "1")),
                          track_requests=False)
    server.run(port=int(os.environ["BENCH_PORT"]), generate_client_file=False)
