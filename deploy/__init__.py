"""Model deployment: the model manifest, inference engines and the ONNX to TensorRT build.

Imports nothing of this project but the manifest, and never imports torch outside the
torch engine.
"""
