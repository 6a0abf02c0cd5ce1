"""mosec: a Rust front end, Python workers, dynamic batching (max_wait_time ≥ 1 ms). Raw image bytes in."""

from __future__ import annotations

import os

from mosec import Server, Worker

from bench.peers.work import Work


class Classify(Worker):
    def __init__(self) -> None:
        super().__init__()
        self.work = Work()

    def deserialize(self, data: bytes) -> bytes:
        return data

    def serialize(self, data: bytes) -> bytes:
        return data

    def forward(self, data: list[bytes]) -> list[bytes]:
        return self.work.answer_bytes(data)


if __name__ == "__main__":
    server = Server()
    server.append_worker(Classify, num=int(os.environ.get("BENCH_WORKERS", "1")), max_batch_size=16, max_wait_time=1)
    server.run()
