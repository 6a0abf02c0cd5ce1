"""Training package: the CNN zoo, real-digit datasets, the training loop and ONNX export."""
