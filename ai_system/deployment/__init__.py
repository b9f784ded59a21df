"""Kubernetes manifests and monitoring rendered from a system blueprint (``ai_system.architecture``).

``KubernetesDeployment(system, monitoring=True, autoscaling=True).deploy()`` is the seed README's
quick start; ``ai-system deploy`` is the same from the command line.
"""

from ai_system.deployment.kubernetes import (
    KUBERNETES_VERSION,
    DeploymentError,
    DeployResult,
    KubernetesDeployment,
    Rendered,
)

__all__ = ["KUBERNETES_VERSION", "DeployResult", "DeploymentError", "KubernetesDeployment", "Rendered"]
