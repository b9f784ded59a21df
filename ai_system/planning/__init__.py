"""Capacity planning for transformer training: memory, FLOPs, communication and time per layout."""
