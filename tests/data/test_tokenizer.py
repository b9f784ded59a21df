"""Tokenizers: exact round trips, streaming that never splits a character, BPE training, save and load."""

from __future__ import annotations

import random

import pytest
from tokenizers import pre_tokenizers

from ai_system.data.sources import read_texts
from ai_system.data.tokenizer import (
    END_OF_TEXT,
    BPETokenizer,
    ByteTokenizer,
    _byte_alphabet,
    corpus_sample,
    tokenizer_for_vocab,
    train_bpe,
)

TEXTS = [
    "",
    "plain ASCII, with  two spaces\tand a tab\r\nand CRLF",
    "héllo wörld — naïve café, ½ € ß",
    "中文字符 日本語のテキスト 한국어",
    "emoji 🎉🦩 with a family 👨‍👩‍👧 and a flag 🇳🇴 and skin tone 👍🏽",
    "def f(x: int) -> int:\n    \"\"\"Docstring.\"\"\"\n    return x ** 2  # comment\n\n\nclass A(B): pass\n",
    "right-to-left: مرحبا بالعالم שלום",
    "NUL \x00 and control \x07\x1b characters",
    f"a literal {END_OF_TEXT} in the text is text",
]


@pytest.fixture(scope="module")
def bpe() -> BPETokenizer:
    """A small BPE learned from a slice of the corpus (fast; the same code trains the 32,000-token one)."""
    return train_bpe(read_texts(corpus_sample(400_000)), 2000)


@pytest.fixture(params=["byte", "bpe"])
def tokenizer(request, bpe):
    return ByteTokenizer() if request.param == "byte" else bpe


@pytest.mark.parametrize("text", TEXTS)
def test_encode_then_decode_gives_back_the_text(tokenizer, text):
    tokens = tokenizer.encode(text)
    assert all(0 <= token < tokenizer.vocab_size for token in tokens)
    assert tokenizer.decode(tokens) == text


def test_batch_encoding_is_encoding_each_text(tokenizer):
    assert tokenizer.encode_batch(TEXTS) == [tokenizer.encode(text) for text in TEXTS]


@pytest.mark.parametrize("text", TEXTS)
def test_streaming_pieces_are_whole_characters_and_join_to_the_text(tokenizer, text):
    decoder = tokenizer.stream_decoder()
    pieces = [decoder.feed(token) for token in tokenizer.encode(text)]
    assert "\ufffd" not in "".join(pieces)
    assert "".join(pieces) + decoder.flush() == text


def test_a_character_spread_over_several_tokens_leaves_once_complete(bpe):
    flamingo = "🦩"
    for tokenizer in (ByteTokenizer(), bpe):
        tokens = tokenizer.encode(flamingo)
        assert len(tokens) > 1, "the test needs a character that takes more than one token"
        decoder = tokenizer.stream_decoder()
        assert [decoder.feed(token) for token in tokens] == [""] * (len(tokens) - 1) + [flamingo]


def test_any_token_stream_decodes_the_same_whole_or_streamed(tokenizer):
    """A model may emit any ids, including bytes that are not UTF-8: both paths replace them alike."""
    rng = random.Random(0)
    for _ in range(200):
        tokens = [rng.randrange(tokenizer.vocab_size) for _ in range(rng.randrange(1, 12))]
        decoder = tokenizer.stream_decoder()
        assert "".join(decoder.feed(token) for token in tokens) + decoder.flush() == tokenizer.decode(tokens)


def test_a_stream_cut_inside_a_character_ends_with_a_replacement_character():
    decoder = ByteTokenizer().stream_decoder()
    assert decoder.feed("é".encode()[0]) == ""
    assert decoder.flush() == "\ufffd"


def test_bpe_learns_the_corpus_and_has_exactly_the_asked_vocabulary(bpe):
    code = "    def __init__(self, name: str) -> None:\n        self.name = name\n        return None\n"
    assert bpe.vocab_size == 2000 and bpe.eos_id == 0
    assert len(bpe.encode(code)) < len(code.encode()) / 2.5
    assert bpe.decode([bpe.eos_id]) == ""


def test_a_short_corpus_is_topped_up_with_reserved_tokens_that_decode_to_nothing():
    tokenizer = train_bpe(["abc abc abd"], 300)
    assert tokenizer.vocab_size == 300
    assert tokenizer.decode([299]) == "" and tokenizer.tokenizer.id_to_token(299).startswith("<|reserved_")
    assert tokenizer.decode(tokenizer.encode("abc abd")) == "abc abd"


def test_our_decode_matches_hugging_face_and_the_byte_alphabet_is_gpt2s(bpe):
    assert set(_byte_alphabet()) == set(pre_tokenizers.ByteLevel.alphabet())
    for text in TEXTS:
        tokens = bpe.encode(text)
        assert bpe.decode(tokens) == bpe.tokenizer.decode(tokens)


def test_bpe_saves_and_loads_as_tokenizer_json(bpe, tmp_path):
    path = tmp_path / "tokenizer.json"
    bpe.save(path)
    loaded = BPETokenizer.load(path)
    assert loaded.vocab_size == bpe.vocab_size and loaded.eos_id == bpe.eos_id
    assert all(loaded.encode(text) == bpe.encode(text) for text in TEXTS)


def test_bad_input_is_named(bpe, tmp_path):
    with pytest.raises(ValueError, match=r"token id 256 is outside the byte tokenizer's vocabulary \[0, 256\)"):
        ByteTokenizer().decode([65, 256])
    with pytest.raises(ValueError, match="token id -1"):
        bpe.stream_decoder().feed(-1)
    for tokenizer in (ByteTokenizer(), bpe):
        with pytest.raises(ValueError, match="surrogates not allowed"):
            tokenizer.encode("lone \ud800 surrogate")
        with pytest.raises(ValueError, match="surrogates not allowed"):
            tokenizer.encode_batch(["fine", "lone \ud800 surrogate"])
    with pytest.raises(ValueError, match="vocab_size must be at least 257"):
        train_bpe(["text"], 256)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        BPETokenizer.load(tmp_path / "missing.json")
    garbage = tmp_path / "garbage.json"
    garbage.write_bytes(b"\x89PNG not a tokenizer")
    with pytest.raises(ValueError, match="is not a Hugging Face tokenizer.json"):
        BPETokenizer.load(garbage)


def test_the_vocab_size_picks_the_tokenizer_and_the_bpe_is_trained_once(tmp_path, monkeypatch):
    assert isinstance(tokenizer_for_vocab(256, cache_dir=tmp_path), ByteTokenizer)
    monkeypatch.setattr("ai_system.data.tokenizer.CORPUS_BYTES_PER_TOKEN", 500)
    first = tokenizer_for_vocab(1000, cache_dir=tmp_path)
    cached = list(tmp_path.glob("stdlib-bpe-1000-*.json"))
    assert len(cached) == 1 and first.vocab_size == 1000

    def no_training(*args: object) -> None:
        raise AssertionError("the cached tokenizer should have been loaded")

    monkeypatch.setattr("ai_system.data.tokenizer.train_bpe", no_training)
    again = tokenizer_for_vocab(1000, cache_dir=tmp_path)
    assert again.encode(TEXTS[5]) == first.encode(TEXTS[5])
