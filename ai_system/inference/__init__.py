"""Inference system: generation on the shared transformer, whose math runs on ``ai_system.ops``.

``generate`` runs prefill, cached decode and sampling on ``ai_system.models.transformer.Transformer``;
``engine`` schedules requests on top of ``generate``'s building blocks. HTTP, load generation and the
MLPerf driver are one layer up, in ``ai_system.serving``.
"""
