"""Inference system: Triton kernels behind a dispatch layer, and generation on the shared transformer.

``ops`` picks a Triton kernel or its torch reference per call; ``generate`` runs prefill, cached
decode and sampling on ``ai_system.models.transformer.Transformer``.
"""
