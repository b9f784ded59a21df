"""Training data: byte-level token sequences from a real text corpus or a synthetic source."""
