"""`python -m export`: merge adapters, parity checks, ONNX and TFLite edge builds, vLLM recipes."""
