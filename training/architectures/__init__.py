"""The CNN zoo. Importing this package registers every architecture."""

from . import classic, scaled  # noqa: F401  (registration side effect)
from .registry import CNN, InputSpec, create_model, get_architecture, list_architectures

__all__ = ["CNN", "InputSpec", "create_model", "get_architecture", "list_architectures"]
