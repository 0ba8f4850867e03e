"""Serve an encoder to many nodes from one Triton Inference Server (PyTriton)."""
