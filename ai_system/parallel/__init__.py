"""Model parallelism for the shared transformer: tensor, sequence, vocabulary and pipeline parallel.

Each strategy lives in one file; ``compose`` stacks them on one ``DeviceMesh`` and ``launch`` starts
the gloo/NCCL process groups they run in.
"""
