"""The blueprint's topology as a Mermaid graph: node pools, what runs on them, and who talks to whom.

One box per pool rather than per node, so a 256-node training pool draws as clearly as a 4-node one.
The docs site renders Mermaid; GitHub does too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ai_system.architecture.capacity import plan_training

if TYPE_CHECKING:
    from ai_system.architecture.blueprint import DistributedAISystem


def mermaid(system: DistributedAISystem) -> str:
    gpus = f"{system.gpu_per_node} x {system.gpu_model}"
    lines = ["graph TB", f'  subgraph ns["namespace {system.namespace}"]']
    edges = []
    if system.training is not None:
        training = system.training
        try:
            layout = plan_training(training, system.training_gpus, system.gpu_model, system.gpu_per_node).layout.label()
        except ValueError:
            layout = "no layout fits"
        lines += [f'    subgraph train["training pool: {system.training_nodes} nodes x {gpus}"]',
                  f'      trainer["torchrun x {system.training_nodes} pods<br/>ai-system train --model {training.model}'
                  f'<br/>{layout}"]',
                  "    end",
                  '    shared[("shared volume<br/>DCP checkpoints + export")]']
        edges += ["  trainer -- NCCL all-reduce / all-gather --> trainer",
                  "  trainer -- checkpoints, export --> shared"]
    if system.serving is not None:
        serving = system.serving
        lines += [f'    subgraph infer["inference pool: {system.inference_nodes} nodes x {gpus}"]',
                  f'      server["ai-system serve x {system.min_replicas}..{system.max_replicas}<br/>'
                  f'{serving.model}, 1 GPU each"]',
                  "    end",
                  '    svc(["Service :8000<br/>/v1/completions"])',
                  f'    hpa{{{{"HPA: queue depth {serving.target_queue_depth:g}/replica, CPU fallback"}}}}']
        edges += ["  clients((clients)) --> svc", "  svc --> server", "  hpa -. scales .-> server"]
        if serving.weights == "training-export":
            edges.append("  shared -- model export --> server")
    if system.search is not None:
        search = system.search
        where = "1 GPU each" if search.device == "cuda" else "CPU"
        lines += [f'    subgraph searchpool["search on the inference pool: {system.inference_nodes} nodes x {gpus}"]',
                  f'      searcher["ai-system search serve x {system.search_min_replicas}..{system.search_max_replicas}'
                  f'<br/>{search.index}, {search.vectors:,} x {search.dim}, {where}"]',
                  "    end",
                  '    searchsvc(["Service :8100<br/>POST /search"])',
                  '    index[("index volume<br/>built by a Job")]']
        edges += ["  searchclients((search clients)) --> searchsvc", "  searchsvc --> searcher",
                  "  index -- index file --> searcher"]
    if system.kv_store is not None:
        store = system.kv_store
        kind = "Redis Cluster" if store.shards > 1 else "Redis"
        lines.append(f'    kv[("{kind}: {store.shards} shard(s) x {store.memory_gib} GiB<br/>'
                     'AOF on persistent volumes")]')
        edges.append("  kvclients((KV clients)) --> kv")
    lines += ['    prom["Prometheus<br/>scrape, rules, alerts"]', "  end"]
    for target, present in (("trainer", system.training), ("server", system.serving), ("kv", system.kv_store)):
        if present is not None:
            edges.append(f"  prom -. scrape .-> {target}")
    if system.scheduler_policy is not None:
        lines.append(f'  sched["kube-scheduler + extender<br/>policy {system.scheduler_policy}"]')
        gpu_search = system.search if system.search is not None and system.search.device == "cuda" else None
        for target, present in (("trainer", system.training), ("server", system.serving), ("searcher", gpu_search)):
            if present is not None:
                edges.append(f"  sched -. places .-> {target}")
    if system.kueue and system.training is not None:
        lines.append('  kueue["Kueue ClusterQueue<br/>admits the job whole"]')
        edges.append("  kueue -. admits .-> trainer")
    return "\n".join(lines + edges) + "\n"
