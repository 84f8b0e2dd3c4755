"""Triton kernels for kfrontend, installed as ``kfrontend.kernels``."""
