"""Serve an encoder to many nodes from one Triton Inference Server (its Python backend)."""
