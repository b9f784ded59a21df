"""Resource manager: GPU allocation for a shared cluster.

A cluster model that never over-commits (``cluster``), the placement policies of the FGD paper and
our own behind one interface (``policies``, with a pure-Python ``reference`` beside the vectorised
scorers), the paper's fill experiment (``fill``) and a discrete-event replay of the trace's times
(``events``), gang placement (``gang``), the kube-scheduler extender (``extender``) and the
Kubernetes manifests that plug it in (``manifests``). ``ai-system schedule`` drives all of them.
"""
