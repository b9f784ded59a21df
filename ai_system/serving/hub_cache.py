"""``ai-system hub-cache``: lay a served model's tokenizer out as a Hugging Face hub cache, offline.

Benchmark clients (AIPerf, GuideLLM) take a model id and load its tokenizer with ``transformers``
from the hub, to count tokens and to build prompts of a given length. Offline
(``HF_HUB_OFFLINE=1``) they find it in the cache when it is laid out as the hub lays it out::

    $HF_HOME/hub/models--ORG--NAME/refs/main            (holds REV)
    $HF_HOME/hub/models--ORG--NAME/snapshots/REV/tokenizer.json
    $HF_HOME/hub/models--ORG--NAME/snapshots/REV/tokenizer_config.json
    $HF_HOME/hub/models--ORG--NAME/snapshots/REV/config.json

``tokenizer.json`` has exactly the ids the server uses (``hugging_face_tokenizer``), and
``tokenizer_config.json`` carries the server's chat template and context length, so a client counts
the tokens the server counts. ``config.json`` holds only the vocabulary size, context length and
end-of-text id (no ``model_type``: ``transformers`` 5 reads a config before any tokenizer, and one
without a type loads as a generic config); no weights are written. REV is a digest of the files.
Serve the model under the same id (``ai-system serve --served-model-name ORG/NAME``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
from pathlib import Path

from ai_system.data.tokenizer import END_OF_TEXT, BPETokenizer, ByteTokenizer, hugging_face_tokenizer
from ai_system.inference.engine import ModelSpec
from ai_system.models.config import MODEL_CONFIGS, get_config
from ai_system.models.pretrained import inspect_pretrained
from ai_system.serving.chat_template import CHAT_TEMPLATE_JINJA
from ai_system.serving.server import served_model

REPO_ID = re.compile(r"^(?:[A-Za-z0-9][A-Za-z0-9._-]*/)?[A-Za-z0-9][A-Za-z0-9._-]*$")


def hub_home() -> Path:
    """``$HF_HOME``, or the hub's default ``~/.cache/huggingface``."""
    return Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface"))


def write_hub_cache(tokenizer: ByteTokenizer | BPETokenizer, repo_id: str, max_context: int,
                    home: Path | None = None) -> Path:
    """Write the tokenizer files for ``repo_id`` into the hub cache under ``home``; returns the snapshot directory."""
    if not REPO_ID.match(repo_id) or ".." in repo_id:
        raise ValueError(f"repo id must look like ORG/NAME (letters, digits, '.', '_', '-'), got {repo_id!r}")
    if max_context < 1:
        raise ValueError(f"max_context must be at least 1, got {max_context}")
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": max_context,
              "chat_template": CHAT_TEMPLATE_JINJA, "clean_up_tokenization_spaces": False}
    if tokenizer.eos_id is not None:
        config["eos_token"] = END_OF_TEXT
    model = {"vocab_size": tokenizer.vocab_size, "max_position_embeddings": max_context,
             "eos_token_id": tokenizer.eos_id}
    files = {"tokenizer.json": hugging_face_tokenizer(tokenizer).to_str().encode(),
             "tokenizer_config.json": json.dumps(config, indent=2).encode(),
             "config.json": json.dumps(model, indent=2).encode()}
    revision = hashlib.sha1(b"".join(files.values())).hexdigest()
    repo = (home or hub_home()) / "hub" / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / revision
    snapshot.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        (snapshot / name).write_bytes(content)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(revision)
    return snapshot


def hub_cache_command(args: argparse.Namespace) -> int:
    """``ai-system hub-cache``: the tokenizer of ``--checkpoint`` or ``--config`` into the hub cache."""
    try:
        spec, tokenizer, _ = served_model(args)
        snapshot = write_hub_cache(tokenizer, args.repo_id, model_context(spec), args.hf_home)
    except (OSError, ValueError) as error:
        print(f"ai-system hub-cache: error: {error}", file=sys.stderr)
        return 2
    home = args.hf_home or hub_home()
    print(f"wrote {snapshot}\nuse it offline with: HF_HOME={home} HF_HUB_OFFLINE=1, model id {args.repo_id} "
          f"(ai-system serve --served-model-name {args.repo_id})")
    return 0


def model_context(spec: ModelSpec) -> int:
    """The longest prompt + output the served model takes (its ``max_seq_len``)."""
    if spec.checkpoint is not None:
        return inspect_pretrained(spec.checkpoint).config.max_seq_len
    return get_config(spec.config_name).max_seq_len


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("hub-cache", help="lay a model's tokenizer out as a Hugging Face hub cache "
                                                     "(for AIPerf, GuideLLM offline)", description=__doc__)
    parser.add_argument("--checkpoint", default=None, help="a model-only checkpoint directory")
    parser.add_argument("--config", default=None, choices=sorted(MODEL_CONFIGS),
                        help="a named config with random weights (default debug; not with --checkpoint)")
    parser.add_argument("--repo-id", required=True, help="the model id clients will use, e.g. ai-system/debug")
    parser.add_argument("--hf-home", type=Path, default=None, help="cache root (default $HF_HOME or "
                                                                   "~/.cache/huggingface)")
    parser.set_defaults(func=hub_cache_command, seed=0, device="cpu", threads=1)
