"""FSDP2 data-parallel training with distributed checkpoints that survive a crash."""
