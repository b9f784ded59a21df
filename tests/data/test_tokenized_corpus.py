"""The corpus through a tokenizer: windows of the token stream, documents split by end-of-text."""

from __future__ import annotations

from pathlib import Path

import pytest

from ai_system.data.loader import ShardedBatches
from ai_system.data.sources import TokenizedCorpus
from ai_system.data.tokenizer import ByteTokenizer, train_bpe

DOCUMENTS = ["def alpha():\n    return 'é'\n", "", "class Beta:\n    gamma = [1, 2, 3]  # 🎉\n" * 3]


@pytest.fixture
def files(tmp_path: Path) -> list[Path]:
    paths = []
    for i, text in enumerate(DOCUMENTS):
        path = tmp_path / f"doc{i}.py"
        path.write_text(text, encoding="utf-8")
        paths.append(path)
    return paths


def test_windows_are_consecutive_slices_of_the_token_stream(files):
    tokenizer = train_bpe(DOCUMENTS * 20, 300)
    stream = [token for text in DOCUMENTS for token in tokenizer.encode(text) + [tokenizer.eos_id]]
    corpus = TokenizedCorpus(files, seq_len=5, tokenizer=tokenizer)
    assert len(corpus) == len(stream) // 6
    for i in range(len(corpus)):
        assert corpus.sequence(i).tolist() == stream[i * 6:(i + 1) * 6]
    with pytest.raises(IndexError, match="out of range"):
        corpus.sequence(len(corpus))
    batch = ShardedBatches(corpus, batch_size=2).next_batch()
    assert batch.shape == (2, 6) and int(batch.max()) < tokenizer.vocab_size


def test_without_end_of_text_the_documents_abut(files):
    corpus = TokenizedCorpus(files, seq_len=4, tokenizer=ByteTokenizer())
    joined = "".join(DOCUMENTS).encode()
    assert bytes(corpus.tokens.tolist()) == joined
    assert len(corpus) == len(joined) // 5


def test_fingerprint_names_the_tokenizer_and_changes_with_the_tokens(files):
    by_bytes = TokenizedCorpus(files, seq_len=4, tokenizer=ByteTokenizer()).fingerprint()
    assert by_bytes.startswith("byte256:3files:")
    assert TokenizedCorpus(files, seq_len=4, tokenizer=train_bpe(DOCUMENTS, 300)).fingerprint() != by_bytes
    files[0].write_text("changed", encoding="utf-8")
    assert TokenizedCorpus(files, seq_len=4, tokenizer=ByteTokenizer()).fingerprint() != by_bytes


def test_too_little_text_for_one_window_is_refused(files):
    with pytest.raises(ValueError, match=r"corpus of \d+ tokens is shorter than one window of 1001"):
        TokenizedCorpus(files, seq_len=1000, tokenizer=ByteTokenizer())
    with pytest.raises(ValueError, match="seq_len must be positive"):
        TokenizedCorpus(files, seq_len=0, tokenizer=ByteTokenizer())
