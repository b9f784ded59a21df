"""Inference system: generation on the shared transformer, whose math runs on ``ai_system.ops``.

``generate`` runs prefill, cached decode and sampling on ``ai_system.models.transformer.Transformer``;
the serving modules (``engine``, ``server``) schedule requests on top of ``generate``'s building blocks.
"""
