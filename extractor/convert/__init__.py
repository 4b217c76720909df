"""Converters from the weight formats that registry packages ship to ONNX, written here.

Each converter reads the original file with our own code (no dlib, Keras or TensorFlow at build
time) and builds the ONNX graph with `onnx.helper`; parity tests compare the result with the
original implementation.
"""
