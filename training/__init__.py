"""Offline training: tubs to datasets, fastai training, ONNX export with a manifest.

Runs on a desktop with the ``training`` extra installed (torch, torchvision, fastai, onnx).
"""
