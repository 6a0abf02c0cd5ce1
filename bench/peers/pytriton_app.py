"""PyTriton: NVIDIA's Triton Inference Server (its HTTP front end and dynamic batcher) calling a Python
function. Input: the image as one BYTES element, sent with Triton's binary-data extension."""

from __future__ import annotations

import os

import numpy as np
from pytriton.decorators import batch
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig

from bench.peers.work import Work

work = Work()


@batch
def infer(image: np.ndarray) -> dict[str, np.ndarray]:
    answers = work.answer_bytes([bytes(row[0]) for row in image])
    return {"answer": np.array([[a] for a in answers], dtype=np.object_)}


if __name__ == "__main__":
    port = int(os.environ["BENCH_PORT"])
    config = TritonConfig(http_address="127.0.0.1", http_port=port, grpc_port=port + 1, metrics_port=port + 2,
                          log_verbose=0)
    with Triton(config=config) as triton:
        triton.bind(model_name="classify", infer_func=infer, inputs=[Tensor(name="image", dtype=np.bytes_, shape=(1,))],
                    outputs=[Tensor(name="answer", dtype=np.bytes_, shape=(1,))],
                    config=ModelConfig(max_batch_size=16, batcher=DynamicBatcher(max_queue_delay_microseconds=1000)))
        triton.serve()
