"""Benchmarks: the service against the physical limit (raw ONNX Runtime), the HTTP ceiling and a naive baseline."""
