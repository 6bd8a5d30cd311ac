"""Inference backends beside eager PyTorch: ``onnx`` (export to ONNX, run with ONNX Runtime,
int8 by ONNX Runtime's static quantization). Optional: ``pip install fastdiffsr[deploy]``."""
