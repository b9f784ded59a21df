"""Saving and loading an index: one file, versioned, with a checksum over everything before it.

Layout: ``MAGIC`` (8 bytes), format version (uint32 little-endian), config length (uint64), the
config as JSON (the index kind and what ``from_state`` needs), the tensors as a safetensors blob
(its length first, uint64), then the SHA-256 of all preceding bytes. A file that is truncated,
altered, of another format or of a newer version fails to load with that reason, never with a
half-built index.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path

import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from ai_system.search.flat import FlatIndex
from ai_system.search.index import VectorIndex
from ai_system.search.ivf import IVFFlatIndex, IVFPQIndex

MAGIC = b"AISYSVEC"
FORMAT_VERSION = 1
INDEX_KINDS: dict[str, type[VectorIndex]] = {cls.kind: cls for cls in (FlatIndex, IVFFlatIndex, IVFPQIndex)}
DIGEST_BYTES = 32


class IndexFileError(ValueError):
    """The file is not a loadable index: wrong format, newer version, truncated or corrupt."""


def save_index(index: VectorIndex, path: str | Path) -> Path:
    """Write ``index`` to ``path`` atomically (a temporary file renamed into place)."""
    config, tensors = index.state()
    header = json.dumps({"kind": index.kind, **config}).encode()
    blob = save_tensors({name: tensor.contiguous() for name, tensor in tensors.items()})
    body = MAGIC + struct.pack("<IQ", FORMAT_VERSION, len(header)) + header + struct.pack("<Q", len(blob)) + blob
    path = Path(path)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_bytes(body + hashlib.sha256(body).digest())
    os.replace(temporary, path)
    return path


def load_index(path: str | Path, device: str | torch.device = "cpu") -> VectorIndex:
    """Read an index written by ``save_index``; raises ``IndexFileError`` saying why a file does not load."""
    path = Path(path)
    data = path.read_bytes()
    fixed = len(MAGIC) + struct.calcsize("<IQ")
    if not (data.startswith(MAGIC) or MAGIC.startswith(data)):
        raise IndexFileError(f"{path} is not an ai-system index file (it does not start with {MAGIC!r})")
    if len(data) < fixed:
        raise IndexFileError(f"{path} is truncated: {len(data)} bytes, shorter than the {fixed}-byte header")
    version, header_length = struct.unpack_from("<IQ", data, len(MAGIC))
    if version != FORMAT_VERSION:
        raise IndexFileError(f"{path} has index format version {version}; this code reads version {FORMAT_VERSION}")
    blob_at = fixed + header_length + 8
    blob_length = struct.unpack_from("<Q", data, blob_at - 8)[0] if len(data) >= blob_at else None
    expected = None if blob_length is None else blob_at + blob_length + DIGEST_BYTES
    if expected is None or len(data) < expected:
        raise IndexFileError(f"{path} is truncated: {len(data)} bytes, expected "
                             f"{expected if expected is not None else f'more than {blob_at}'}")
    if len(data) > expected:
        raise IndexFileError(f"{path} has {len(data) - expected} unexpected bytes after its checksum")
    body, digest = data[:-DIGEST_BYTES], data[-DIGEST_BYTES:]
    if hashlib.sha256(body).digest() != digest:
        raise IndexFileError(f"{path} is corrupt: its SHA-256 checksum does not match its contents")
    config = json.loads(data[fixed:fixed + header_length])
    kind = config.pop("kind")
    if kind not in INDEX_KINDS:
        raise IndexFileError(f"{path} holds an index of kind {kind!r}; known kinds: {', '.join(INDEX_KINDS)}")
    return INDEX_KINDS[kind].from_state(config, load_tensors(data[blob_at:blob_at + blob_length]), device)
