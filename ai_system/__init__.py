"""ai-system-design: reference implementations and benchmarks for large-scale AI systems."""

__version__ = "0.1.0"
