"""``ai-system search``: build an index file, query it, serve it over HTTP, or run the case study.

``build`` embeds or generates a corpus, trains and fills an index and saves it (``persist``);
``query`` loads one and prints the nearest ids (and paragraphs, for the Python-docs corpus) as
JSON; ``serve`` answers ``POST /search`` until interrupted; ``study`` is the case study
(``ai_system.search.casestudy``). Bad arguments end the command with one line on stderr, exit 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from ai_system.search.data import Dataset, clustered_embeddings, embed_texts, python_docs_embeddings
from ai_system.search.flat import FlatIndex
from ai_system.search.index import VectorIndex
from ai_system.search.ivf import IVFFlatIndex, IVFIndex, IVFPQIndex
from ai_system.search.metric import METRICS
from ai_system.search.persist import load_index, save_index
from ai_system.serving.server import check_device_present, torch_device

KINDS = ("flat", "ivf_flat", "ivf_pq")


def load_dataset(args: argparse.Namespace) -> Dataset:
    """The corpus ``--data`` names: ``clustered``, ``python-docs`` or a ``.npy`` file of float vectors."""
    if args.data == "clustered":
        return clustered_embeddings(args.n, args.dim, args.clusters, seed=args.seed)
    if args.data == "python-docs":
        return python_docs_embeddings(seed=args.seed)
    path = Path(args.data)
    if path.suffix != ".npy" or not path.is_file():
        raise ValueError(f"--data must be clustered, python-docs or an existing .npy file, got {args.data!r}")
    vectors = torch.from_numpy(np.load(path).astype(np.float32))
    return Dataset(path.stem, vectors, vectors[:1], args.metric or "ip")


def new_index(kind: str, dim: int, metric: str, nlist: int, nprobe: int, pq_m: int, seed: int = 0) -> VectorIndex:
    if kind == "flat":
        return FlatIndex(dim, metric)
    if kind == "ivf_flat":
        return IVFFlatIndex(dim, nlist, metric, nprobe, seed=seed)
    return IVFPQIndex(dim, nlist, pq_m, metric, nprobe, seed=seed)


def texts_path(index_path: Path) -> Path:
    return index_path.with_name(index_path.name + ".texts.json")


def build(args: argparse.Namespace) -> int:
    dataset = load_dataset(args)
    index = new_index(args.kind, dataset.dim, args.metric or dataset.metric, args.nlist, args.nprobe, args.pq_m,
                      args.seed)
    if isinstance(index, IVFIndex):
        index.train(dataset.corpus)
    index.add(dataset.corpus)
    out = save_index(index, args.out)
    if dataset.texts is not None:
        texts_path(out).write_text(json.dumps(dataset.texts))
    print(json.dumps({"index": str(out), "kind": index.kind, "metric": index.metric, "dim": index.dim,
                      "size": len(index), "bytes_per_vector": index.nbytes / len(index), "data": dataset.name}))
    return 0


def query(args: argparse.Namespace) -> int:
    index = load_index(args.index)
    if args.text is not None:
        queries = embed_texts([args.text])
    elif args.vector is not None:
        queries = torch.tensor(json.loads(args.vector), dtype=torch.float32)
    else:
        queries = torch.randn(args.random, index.dim, generator=torch.Generator().manual_seed(args.seed))
    hits = index.search(queries, args.k, args.nprobe) if isinstance(index, IVFIndex) and args.nprobe else \
        index.search(queries, args.k)
    answer: dict[str, object] = {"ids": hits.ids.tolist(), "scores": hits.scores.tolist()}
    sidecar = texts_path(Path(args.index))
    if sidecar.exists():
        texts = json.loads(sidecar.read_text())
        answer["texts"] = [[texts[i] if 0 <= i < len(texts) else None for i in row] for row in hits.ids.tolist()]
    print(json.dumps(answer, indent=2))
    return 0


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    from ai_system.search.server import create_app
    from ai_system.serving.batcher import BatcherConfig

    check_device_present(args.device)
    torch.set_num_threads(args.threads)
    config = BatcherConfig(args.max_batch_size, args.max_queue_delay_ms, args.max_queue_size, args.timeout_s)
    app = create_app(load_index(args.index, args.device), config)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, access_log=False)
    return 0


def run(args: argparse.Namespace) -> int:
    try:
        return args.action(args)
    except (OSError, RuntimeError, ValueError) as error:
        print(f"ai-system search {args.search_command}: {error}", file=sys.stderr)
        return 2


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from ai_system.search import casestudy

    parser = subparsers.add_parser("search", help="vector search: build, query, serve an index; the case study",
                                   description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="search_command", required=True, metavar="SUBCOMMAND")

    build_parser = commands.add_parser("build", help="train and fill an index, save it to --out")
    build_parser.add_argument("--data", default="clustered",
                              help="clustered (synthetic), python-docs (stdlib docstrings embedded with MiniLM) "
                                   "or a .npy file of vectors")
    build_parser.add_argument("--kind", choices=KINDS, default="ivf_flat")
    build_parser.add_argument("--metric", choices=METRICS, default=None, help="default: the corpus's (ip)")
    build_parser.add_argument("--n", type=int, default=100_000, help="clustered: vectors")
    build_parser.add_argument("--dim", type=int, default=128, help="clustered: dimension")
    build_parser.add_argument("--clusters", type=int, default=1000, help="clustered: clusters")
    build_parser.add_argument("--nlist", type=int, default=256, help="IVF: lists")
    build_parser.add_argument("--nprobe", type=int, default=16, help="IVF: lists scanned by default")
    build_parser.add_argument("--pq-m", type=int, default=16, help="IVF-PQ: bytes per vector")
    build_parser.add_argument("--seed", type=int, default=0)
    build_parser.add_argument("--out", required=True, help="index file to write")
    build_parser.set_defaults(action=build)

    query_parser = commands.add_parser("query", help="search a saved index; prints JSON")
    query_parser.add_argument("--index", required=True)
    source = query_parser.add_mutually_exclusive_group()
    source.add_argument("--text", help="embed this text with MiniLM (for a python-docs index)")
    source.add_argument("--vector", help="a JSON list of numbers, or a list of such lists")
    source.add_argument("--random", type=int, default=1, help="this many random query vectors (default)")
    query_parser.add_argument("--k", type=int, default=10)
    query_parser.add_argument("--nprobe", type=int, default=None)
    query_parser.add_argument("--seed", type=int, default=0)
    query_parser.set_defaults(action=query)

    serve_parser = commands.add_parser("serve", help="serve POST /search over HTTP with dynamic batching")
    serve_parser.add_argument("--index", required=True)
    serve_parser.add_argument("--device", type=torch_device, default="cpu",
                              help="torch device that holds and searches the index, e.g. cpu or cuda")
    serve_parser.add_argument("--host", default="127.0.0.1")
    serve_parser.add_argument("--port", type=int, default=8100)
    serve_parser.add_argument("--max-batch-size", type=int, default=64, help="requests per search batch")
    serve_parser.add_argument("--max-queue-delay-ms", type=float, default=2.0)
    serve_parser.add_argument("--max-queue-size", type=int, default=1024, help="waiting requests before 429")
    serve_parser.add_argument("--timeout-s", type=float, default=10.0, help="per-request timeout (504)")
    serve_parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads")
    serve_parser.add_argument("--log-level", default="warning")
    serve_parser.set_defaults(action=serve)

    casestudy.add_parser(commands)
    parser.set_defaults(func=run)
