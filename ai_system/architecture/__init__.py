"""System blueprints: a validated description of a cluster, its capacity and its topology.

``DistributedAISystem`` is what the seed README's quick start builds; ``ai_system.deployment``
renders it into Kubernetes manifests and monitoring.
"""

from ai_system.architecture.blueprint import (
    DistributedAISystem,
    KVStoreSpec,
    SearchSpec,
    ServingSpec,
    TrainingSpec,
)
from ai_system.architecture.capacity import CapacitySummary, Figure, TrainingPlan, plan_training

__all__ = ["CapacitySummary", "DistributedAISystem", "Figure", "KVStoreSpec", "SearchSpec", "ServingSpec",
           "TrainingPlan", "TrainingSpec", "plan_training"]
