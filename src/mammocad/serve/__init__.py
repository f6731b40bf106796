"""Serving a trained run: ONNX export, the inference engine, the REST API."""
