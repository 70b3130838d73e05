"""The artifact against its PyTorch model on x86 and ARM64 onnxruntime, and on the JVM."""
