"""Tokenizers: text ↔ token ids for the byte models and for the large-vocabulary configs.

Both tokenizers here are byte-level: every token stands for a fixed byte string, so any text
encodes (no unknown token) and decoding is joining bytes and reading them as UTF-8. Streaming
decodes bytes incrementally, so a character whose bytes span several tokens (an emoji split by
BPE, or the bytes of the byte tokenizer) leaves in one piece, once complete.

- ``ByteTokenizer``: a token is a byte (vocabulary 256), what the ``debug`` and ``small`` configs use.
- ``BPETokenizer``: byte-level BPE trained with Hugging Face ``tokenizers`` on the project's corpus
  (the standard library sources, read offline), saved and loaded as ``tokenizer.json``. The
  trainer stops a little short of the asked vocabulary (merges that rebuild an existing token count
  against it), so the rest is filled with reserved special tokens, as Llama 3 reserves 256 of its
  128,256: the vocabulary is then exactly the model's, and every id a model can emit decodes.
"""

from __future__ import annotations

import codecs
import hashlib
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Protocol

from tokenizers import AddedToken, decoders, models, pre_tokenizers, trainers
from tokenizers import Tokenizer as HFTokenizer

from ai_system.data.sources import BYTE_VOCAB_SIZE, read_texts, stdlib_files, stdlib_root

END_OF_TEXT = "<|endoftext|>"
RESERVED_TOKEN = "<|reserved_{}|>"
CORPUS_BYTES_PER_TOKEN = 128
ARTIFACTS_ENV = "AISYS_ARTIFACTS_DIR"


class Tokenizer(Protocol):
    """What the server, the checkpoint format and the data pipeline need from a tokenizer."""

    kind: str
    vocab_size: int
    eos_id: int | None

    def encode(self, text: str) -> list[int]: ...

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """``encode`` of each text, on every core where the tokenizer can (for corpora)."""
        ...

    def decode(self, tokens: Sequence[int]) -> str: ...

    def stream_decoder(self) -> StreamDecoder:
        """A decoder for one growing sequence of tokens (a streamed completion)."""
        ...


class StreamDecoder:
    """Text of a token stream piece by piece; a character leaves only once all its bytes have arrived.

    Bytes that are not UTF-8 (a model may emit any token) become U+FFFD, exactly as ``decode`` of
    the whole sequence does, so the pieces always join to the whole.
    """

    def __init__(self, tokenizer: ByteLevelTokenizer) -> None:
        self._token_bytes = tokenizer.token_bytes
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, token: int) -> str:
        """The text this token completes (empty while a character is still partial)."""
        return self._utf8.decode(self._token_bytes(token))

    def flush(self) -> str:
        """What is left at the end of the stream: U+FFFD for a character cut short, else nothing."""
        return self._utf8.decode(b"", final=True)


class ByteLevelTokenizer:
    """Decoding shared by the tokenizers whose every token is a byte string (``_pieces[id]``)."""

    kind: str
    eos_id: int | None
    _pieces: list[bytes]

    @property
    def vocab_size(self) -> int:
        return len(self._pieces)

    def token_bytes(self, token: int) -> bytes:
        if not 0 <= token < len(self._pieces):
            raise ValueError(f"token id {token} is outside the {self.kind} tokenizer's vocabulary "
                             f"[0, {len(self._pieces)})")
        return self._pieces[token]

    def decode(self, tokens: Sequence[int]) -> str:
        return b"".join(self.token_bytes(token) for token in tokens).decode("utf-8", errors="replace")

    def stream_decoder(self) -> StreamDecoder:
        return StreamDecoder(self)


class ByteTokenizer(ByteLevelTokenizer):
    """UTF-8 bytes as tokens: no vocabulary to train or ship, and no end-of-text token."""

    kind = "byte"
    eos_id = None

    def __init__(self) -> None:
        self._pieces = [bytes([value]) for value in range(BYTE_VOCAB_SIZE)]

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [self.encode(text) for text in texts]


def _byte_alphabet() -> dict[str, int]:
    """The printable character byte-level BPE writes for each byte (GPT-2's table), mapped back to the byte.

    Printable Latin-1 bytes stand for themselves; the others take the characters from U+0100 on, in
    byte order, so that a token's string never holds whitespace or control characters.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    characters = {value: chr(value) for value in printable}
    others = [value for value in range(BYTE_VOCAB_SIZE) if value not in characters]
    characters.update({value: chr(BYTE_VOCAB_SIZE + n) for n, value in enumerate(others)})
    return {character: value for value, character in characters.items()}


class BPETokenizer(ByteLevelTokenizer):
    """Byte-level BPE in a Hugging Face ``tokenizers`` model; special tokens decode to nothing."""

    kind = "bpe"

    def __init__(self, tokenizer: HFTokenizer) -> None:
        self.tokenizer = tokenizer
        tokenizer.encode_special_tokens = True
        special = set(tokenizer.get_added_tokens_decoder())
        alphabet = _byte_alphabet()
        self._pieces = []
        for token in range(tokenizer.get_vocab_size(with_added_tokens=True)):
            piece = tokenizer.id_to_token(token)
            if piece is None:
                raise ValueError(f"tokenizer has no token for id {token}; ids must run 0..vocab_size-1")
            if token in special:
                self._pieces.append(b"")
            elif all(character in alphabet for character in piece):
                self._pieces.append(bytes(alphabet[character] for character in piece))
            else:
                raise ValueError(f"token {token} ({piece!r}) is not byte-level BPE: a character outside the "
                                 "256-character byte alphabet")
        self.eos_id = tokenizer.token_to_id(END_OF_TEXT)

    def encode(self, text: str) -> list[int]:
        """Ids of ``text``; text that spells a special token (``<|endoftext|>``) is encoded as plain text."""
        text.encode("utf-8")  # lone surrogates: UnicodeEncodeError (a ValueError), not tokenizers' TypeError
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        for text in texts:
            text.encode("utf-8")
        return [encoding.ids for encoding in self.tokenizer.encode_batch(list(texts), add_special_tokens=False)]

    def save(self, path: Path) -> None:
        self.tokenizer.save(str(path))

    @classmethod
    def load(cls, path: Path) -> BPETokenizer:
        if not path.is_file():
            raise FileNotFoundError(f"tokenizer file {path} does not exist")
        try:
            tokenizer = HFTokenizer.from_file(str(path))
        except Exception as error:  # noqa: BLE001 - tokenizers raises plain Exception for unreadable files
            raise ValueError(f"{path} is not a Hugging Face tokenizer.json: {error}") from error
        return cls(tokenizer)


def train_bpe(texts: Iterable[str], vocab_size: int) -> BPETokenizer:
    """Learn byte-level BPE merges from ``texts`` up to exactly ``vocab_size`` ids (id 0: ``<|endoftext|>``)."""
    smallest = BYTE_VOCAB_SIZE + 1
    if vocab_size < smallest:
        raise ValueError(f"vocab_size must be at least {smallest} (256 bytes + end-of-text), got {vocab_size}")
    tokenizer = HFTokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[END_OF_TEXT], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(texts, trainer)
    missing = vocab_size - tokenizer.get_vocab_size(with_added_tokens=True)
    tokenizer.add_special_tokens([AddedToken(RESERVED_TOKEN.format(n), special=True) for n in range(missing)])
    return BPETokenizer(tokenizer)


def hugging_face_tokenizer(tokenizer: ByteTokenizer | BPETokenizer) -> HFTokenizer:
    """The same ids as a Hugging Face ``tokenizers`` object, for clients that count tokens with
    ``transformers``: a BPE is its own; the byte tokenizer becomes a byte-level BPE with no merges,
    whose token for byte ``b`` has id ``b``."""
    if isinstance(tokenizer, BPETokenizer):
        return tokenizer.tokenizer
    bytes_as_bpe = HFTokenizer(models.BPE(vocab=_byte_alphabet(), merges=[]))
    bytes_as_bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    bytes_as_bpe.decoder = decoders.ByteLevel()
    return bytes_as_bpe


def corpus_sample(max_bytes: int, root: Path | None = None) -> list[Path]:
    """Standard-library files spread evenly over the sorted list, about ``max_bytes`` in all."""
    files = stdlib_files(root)
    total = sum(path.stat().st_size for path in files)
    return files[::max(1, total // max(1, max_bytes))]


def artifacts_dir() -> Path:
    """Where generated files that are not results live (git-ignored ``artifacts/``, or ``$AISYS_ARTIFACTS_DIR``)."""
    return Path(os.environ.get(ARTIFACTS_ENV, Path(__file__).resolve().parents[2] / "artifacts"))


def tokenizer_for_vocab(vocab_size: int, cache_dir: Path | None = None) -> ByteTokenizer | BPETokenizer:
    """The tokenizer for a model of this vocabulary: bytes for 256, else a BPE trained on the corpus.

    The BPE trains on about 128 bytes of corpus per token (seconds) and is cached in ``cache_dir``
    (default ``artifacts/tokenizers``) under a name that changes with the files it was trained on.
    """
    if vocab_size == BYTE_VOCAB_SIZE:
        return ByteTokenizer()
    files = corpus_sample(CORPUS_BYTES_PER_TOKEN * vocab_size)
    digest = hashlib.sha256()
    for path in files:
        digest.update(f"{path.relative_to(stdlib_root())}:{path.stat().st_size};".encode())
    cache_dir = cache_dir or artifacts_dir() / "tokenizers"
    path = cache_dir / f"stdlib-bpe-{vocab_size}-{digest.hexdigest()[:12]}.json"
    if path.is_file():
        return BPETokenizer.load(path)
    tokenizer = train_bpe(read_texts(files), vocab_size)
    cache_dir.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".{os.getpid()}.tmp")
    tokenizer.save(partial)
    partial.replace(path)
    return tokenizer
