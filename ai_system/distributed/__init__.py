"""Distributed execution of the shared transformer: layouts, meshes, parallelisms, process groups.

``layout`` is the one description of how a run is split (planned by ``ai_system.planning``, run by
``ai_system.training``); ``parallelize`` applies tensor/sequence parallelism, activation
checkpointing, compilation and FSDP2 to a module in one documented order; ``pipeline`` cuts the
model into stages and schedules them; ``launch`` joins or starts the gloo/NCCL process group.
``tensor_parallel_explicit`` writes tensor parallelism out with plain collectives, for reading.
"""
