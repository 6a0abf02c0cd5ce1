"""Peer model servers (mosec, TorchServe, PyTriton, BentoML, LitServe) doing the service's work, each from
its own virtual environment, measured interleaved with cnn-serve: ``make bench-peers``."""
