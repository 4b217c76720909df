"""The extractor: face detection, alignment, facens and attributes on onnxruntime."""
