"""Index files: every kind round-trips exactly; a truncated, corrupt, foreign or newer file fails with its reason."""

from __future__ import annotations

import struct

import pytest
import torch

from ai_system.search import FlatIndex, IndexFileError, IVFFlatIndex, IVFPQIndex, load_index, save_index
from ai_system.search.persist import MAGIC


@pytest.fixture(scope="module")
def vectors():
    return torch.randn(600, 8, generator=torch.Generator().manual_seed(0))


def built(kind: str, vectors: torch.Tensor):
    index = {"flat": lambda: FlatIndex(8, "l2"), "ivf_flat": lambda: IVFFlatIndex(8, 4, "cosine", train_iterations=3),
             "ivf_pq": lambda: IVFPQIndex(8, 4, 2, "l2", train_iterations=2)}[kind]()
    if kind != "flat":
        index.train(vectors[:300])
    index.add(vectors)
    index.remove([1, 2, 3])
    return index


@pytest.mark.parametrize("kind", ["flat", "ivf_flat", "ivf_pq"])
def test_round_trip_answers_the_same(tmp_path, vectors, kind):
    index = built(kind, vectors)
    loaded = load_index(save_index(index, tmp_path / "index.bin"))
    assert type(loaded) is type(index) and len(loaded) == len(index) == 597
    before, after = index.search(vectors[:20], 5), loaded.search(vectors[:20], 5)
    assert torch.equal(before.ids, after.ids)
    torch.testing.assert_close(before.scores, after.scores)
    assert loaded.add(vectors[:1]).tolist() == [600]


@pytest.fixture
def saved(tmp_path, vectors):
    return save_index(built("ivf_flat", vectors), tmp_path / "index.bin")


def test_truncated_file_says_so(saved):
    data = saved.read_bytes()
    for length in (0, 5, 20, len(data) // 2, len(data) - 1):
        saved.write_bytes(data[:length])
        with pytest.raises(IndexFileError, match="truncated"):
            load_index(saved)


def test_flipped_byte_fails_the_checksum(saved):
    data = bytearray(saved.read_bytes())
    data[len(data) // 2] ^= 0x01
    saved.write_bytes(bytes(data))
    with pytest.raises(IndexFileError, match="corrupt: its SHA-256 checksum"):
        load_index(saved)


def test_other_formats_and_versions_are_refused(saved, tmp_path):
    other = tmp_path / "other.bin"
    other.write_bytes(b"PK\x03\x04 not an index")
    with pytest.raises(IndexFileError, match="not an ai-system index file"):
        load_index(other)
    data = bytearray(saved.read_bytes())
    data[len(MAGIC):len(MAGIC) + 4] = struct.pack("<I", 99)
    saved.write_bytes(bytes(data))
    with pytest.raises(IndexFileError, match="format version 99; this code reads version 1"):
        load_index(saved)
