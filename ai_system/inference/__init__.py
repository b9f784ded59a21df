"""Inference system: Triton kernels behind a dispatch layer, and generation on the shared transformer.

``ops`` picks a Triton kernel (``kernels/``) or its torch reference per call; ``generate`` runs
prefill, cached decode and sampling on ``ai_system.models.transformer.Transformer``; ``engine``
schedules requests on top of ``generate``'s building blocks. HTTP, load generation and the MLPerf
driver are one layer up, in ``ai_system.serving``.
"""
