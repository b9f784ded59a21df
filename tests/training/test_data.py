"""The corpus reads the right bytes, shards split batches exactly, and the stream resumes exactly."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ai_system.data.loader import ShardedBatches
from ai_system.data.sources import DOCUMENT_SEPARATOR, ByteCorpus, SyntheticTokens, stdlib_files


@pytest.fixture
def files(tmp_path: Path) -> list[Path]:
    paths = []
    for i, text in enumerate([b"alpha beta gamma\n", b"delta\n", b"epsilon zeta eta theta iota\n"]):
        path = tmp_path / f"f{i}.py"
        path.write_bytes(text)
        paths.append(path)
    return paths


def test_windows_are_consecutive_slices_of_the_joined_files(files):
    stream = b"".join(p.read_bytes() + DOCUMENT_SEPARATOR for p in files)
    corpus = ByteCorpus(files, seq_len=6)
    assert len(corpus) == len(stream) // 7
    for i in range(len(corpus)):
        assert bytes(corpus.sequence(i).tolist()) == stream[i * 7:(i + 1) * 7]
    with pytest.raises(IndexError, match="out of range"):
        corpus.sequence(len(corpus))


def test_fingerprint_changes_when_the_corpus_does(files, tmp_path):
    before = ByteCorpus(files, seq_len=6).fingerprint()
    files[1].write_bytes(b"delta and more\n")
    assert ByteCorpus(files, seq_len=6).fingerprint() != before
    assert ByteCorpus(files, seq_len=5).fingerprint() != ByteCorpus(files, seq_len=6).fingerprint()


def test_bad_corpus_inputs_are_named(files, tmp_path):
    with pytest.raises(ValueError, match="seq_len must be positive, got 0"):
        ByteCorpus(files, seq_len=0)
    with pytest.raises(ValueError, match="shorter than one window"):
        ByteCorpus(files[:1], seq_len=1000)
    with pytest.raises(ValueError, match="not a directory"):
        stdlib_files(tmp_path / "missing")


def test_stdlib_corpus_is_real_python_source():
    corpus = ByteCorpus.stdlib(seq_len=64)
    assert len(corpus.files) > 500 and len(corpus) > 100_000
    assert any(p.name == "os.py" for p in corpus.files)
    assert int(corpus.sequence(12345).max()) < 256


def test_synthetic_tokens_are_a_pure_function_of_seed_and_index():
    a, b = SyntheticTokens(16, vocab_size=50, seed=3), SyntheticTokens(16, vocab_size=50, seed=3)
    assert torch.equal(a.sequence(7), b.sequence(7))
    assert not torch.equal(a.sequence(7), a.sequence(8))
    assert int(a.sequence(7).max()) < 50 and a.sequence(0).shape == (17,)


@pytest.mark.parametrize("world_size", [2, 4])
def test_ranks_together_see_the_single_process_batch(world_size):
    source = SyntheticTokens(8, num_sequences=50)
    single = ShardedBatches(source, batch_size=8)
    ranks = [ShardedBatches(source, batch_size=8, rank=r, world_size=world_size) for r in range(world_size)]
    for _ in range(10):
        assert torch.equal(single.next_batch(), torch.cat([r.next_batch() for r in ranks]))


def test_every_sample_is_seen_once_per_epoch_and_epochs_reshuffle():
    source = SyntheticTokens(4, num_sequences=12)
    loader = ShardedBatches(source, batch_size=4, seed=1)
    epoch = [loader._index(g) for g in range(12)]
    assert sorted(epoch) == list(range(12))
    assert [loader._index(g) for g in range(12, 24)] != epoch


def test_resume_continues_at_the_exact_sample_even_on_another_world_size():
    source = SyntheticTokens(8, num_sequences=30)
    uninterrupted = ShardedBatches(source, batch_size=6, seed=5)
    for _ in range(7):
        uninterrupted.next_batch()
    state = uninterrupted.state_dict()
    expected = uninterrupted.next_batch()
    resumed = [ShardedBatches(source, batch_size=6, rank=r, world_size=3, seed=5) for r in range(3)]
    for loader in resumed:
        loader.load_state_dict(state)
    assert torch.equal(torch.cat([r.next_batch() for r in resumed]), expected)


def test_resume_refuses_other_data_or_seed():
    state = ShardedBatches(SyntheticTokens(8), batch_size=2, seed=0).state_dict()
    with pytest.raises(ValueError, match="checkpoint was written for data"):
        ShardedBatches(SyntheticTokens(9), batch_size=2, seed=0).load_state_dict(state)
    with pytest.raises(ValueError, match="seed 0 differs from this run's seed 1"):
        ShardedBatches(SyntheticTokens(8), batch_size=2, seed=1).load_state_dict(state)


def test_batch_must_split_over_ranks():
    with pytest.raises(ValueError, match="batch_size=6 must be a positive multiple of world_size=4"):
        ShardedBatches(SyntheticTokens(8), batch_size=6, rank=0, world_size=4)
    with pytest.raises(ValueError, match="rank must be in"):
        ShardedBatches(SyntheticTokens(8), batch_size=4, rank=2, world_size=2)
