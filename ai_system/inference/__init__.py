"""Inference system: Triton kernels behind a dispatch layer, and generation on the shared transformer.

``ops`` picks a Triton kernel (``kernels/``) or its torch reference per call; ``generate`` runs
prefill, cached decode and sampling on ``ai_system.models.transformer.Transformer``; the serving
modules (``engine``, ``server``) schedule requests on top of ``generate``'s building blocks.
"""
