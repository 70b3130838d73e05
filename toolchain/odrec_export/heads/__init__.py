"""What every compressor's ONNX head ends with (``tail.py``); the heads themselves live with their
compressors in ``compressors/``."""
