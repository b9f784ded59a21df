"""Where training sequences come from: Python's standard library sources, or seeded random tokens.

Every machine with Python has the stdlib, so it is a real text corpus that needs no download. The
byte models read it byte-level (vocabulary 256: no tokenizer to train or ship) as one virtual
stream, the files in sorted order joined by a NUL byte, cut into fixed windows of ``seq_len + 1``
bytes (inputs and next-byte targets). A window is read straight from disk by offset, so the corpus
is streamed, never loaded whole, and any sequence can be fetched by its index: that is what makes
sharding and resuming exact. The large-vocabulary configs read the same files through a tokenizer
(``TokenizedCorpus``): tokenized once into memory, then cut into windows the same way.
"""

from __future__ import annotations

import bisect
import hashlib
import sysconfig
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import torch

if TYPE_CHECKING:
    from ai_system.data.tokenizer import Tokenizer

DOCUMENT_SEPARATOR = b"\x00"
BYTE_VOCAB_SIZE = 256
ENCODE_BATCH_FILES = 64


class SequenceSource(Protocol):
    """A finite, indexable set of token windows of length ``seq_len + 1``."""

    seq_len: int

    def __len__(self) -> int: ...

    def sequence(self, index: int) -> torch.Tensor: ...

    def fingerprint(self) -> str:
        """Identifies the data, so a resumed run can refuse a corpus that changed underneath it."""
        ...


def window_count(length: int, seq_len: int, unit: str) -> int:
    """How many whole windows of ``seq_len + 1`` fit in a stream of ``length`` units; at least one."""
    if length < seq_len + 1:
        raise ValueError(f"corpus of {length} {unit} is shorter than one window of {seq_len + 1}")
    return length // (seq_len + 1)


def check_index(index: int, count: int) -> None:
    if not 0 <= index < count:
        raise IndexError(f"sequence index {index} out of range [0, {count})")


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def stdlib_files(root: Path | None = None) -> list[Path]:
    """The ``.py`` files of the standard library (third-party ``site-packages`` excluded), sorted."""
    root = root or stdlib_root()
    if not root.is_dir():
        raise ValueError(f"corpus root {root} is not a directory")
    files = sorted(p for p in root.rglob("*.py") if "site-packages" not in p.parts and p.is_file())
    if not files:
        raise ValueError(f"no .py files under corpus root {root}")
    return files


def read_texts(files: Iterable[Path]) -> Iterator[str]:
    """The files as text; the few stdlib files that are not UTF-8 (encoding tests) get U+FFFD."""
    return (path.read_text(encoding="utf-8", errors="replace") for path in files)


class ByteCorpus:
    """Files read as one byte stream and cut into non-overlapping windows of ``seq_len + 1`` bytes.

    Consecutive windows overlap by nothing, so the last byte of window i (a target) is not the
    first input of window i+1; the few bytes after the last whole window are never used.
    """

    def __init__(self, files: list[Path], seq_len: int) -> None:
        if seq_len <= 0:
            raise ValueError(f"seq_len must be positive, got {seq_len}")
        if not files:
            raise ValueError("ByteCorpus needs at least one file, got none")
        self.seq_len = seq_len
        self.files = list(files)
        self.starts: list[int] = []
        offset = 0
        for path in self.files:
            self.starts.append(offset)
            offset += path.stat().st_size + len(DOCUMENT_SEPARATOR)
        self.total_bytes = offset
        self._count = window_count(self.total_bytes, seq_len, "bytes")

    @classmethod
    def stdlib(cls, seq_len: int, root: Path | None = None) -> ByteCorpus:
        return cls(stdlib_files(root), seq_len)

    def __len__(self) -> int:
        return self._count

    def fingerprint(self) -> str:
        digest = hashlib.sha256()
        for path, start in zip(self.files, self.starts, strict=True):
            digest.update(f"{path.name}:{start};".encode())
        return f"bytes:{len(self.files)}files:{self.total_bytes}B:seq{self.seq_len}:{digest.hexdigest()[:16]}"

    def read(self, offset: int, length: int) -> bytes:
        """``length`` bytes of the virtual stream from ``offset``, crossing file boundaries as needed."""
        out = bytearray()
        index = bisect.bisect_right(self.starts, offset) - 1
        while len(out) < length and index < len(self.files):
            within = offset + len(out) - self.starts[index]
            with self.files[index].open("rb") as handle:
                handle.seek(within)
                out += handle.read(length - len(out))
            if len(out) < length:
                out += DOCUMENT_SEPARATOR
            index += 1
        if len(out) < length:
            raise ValueError(f"read of {length} bytes at offset {offset} runs past the corpus end {self.total_bytes}")
        return bytes(out[:length])

    def sequence(self, index: int) -> torch.Tensor:
        check_index(index, self._count)
        window = self.read(index * (self.seq_len + 1), self.seq_len + 1)
        return torch.frombuffer(bytearray(window), dtype=torch.uint8).long()


class TokenizedCorpus:
    """Files encoded by ``tokenizer`` into one token stream and cut into windows of ``seq_len + 1`` tokens.

    Documents are joined by the tokenizer's end-of-text token when it has one (the byte tokenizer
    has none, so its files simply abut). Windows do not overlap, as in ``ByteCorpus``. Encoding
    happens once, here, ``ENCODE_BATCH_FILES`` files at a time on every core: about 8 million tokens
    with the 32,000-token BPE, held at 4 bytes each.
    """

    def __init__(self, files: list[Path], seq_len: int, tokenizer: Tokenizer) -> None:
        if seq_len <= 0:
            raise ValueError(f"seq_len must be positive, got {seq_len}")
        if not files:
            raise ValueError("TokenizedCorpus needs at least one file, got none")
        separator = [] if tokenizer.eos_id is None else [tokenizer.eos_id]
        self.seq_len = seq_len
        self.files = list(files)
        self.tokenizer = tokenizer
        pieces = []
        for start in range(0, len(self.files), ENCODE_BATCH_FILES):
            texts = list(read_texts(self.files[start:start + ENCODE_BATCH_FILES]))
            pieces += [torch.tensor(tokens + separator, dtype=torch.int32) for tokens in tokenizer.encode_batch(texts)]
        self.tokens = torch.cat(pieces)
        self._count = window_count(len(self.tokens), seq_len, "tokens")

    @classmethod
    def stdlib(cls, seq_len: int, tokenizer: Tokenizer, root: Path | None = None) -> TokenizedCorpus:
        return cls(stdlib_files(root), seq_len, tokenizer)

    def __len__(self) -> int:
        return self._count

    def fingerprint(self) -> str:
        digest = hashlib.sha256(self.tokens.numpy().tobytes()).hexdigest()[:16]
        return (f"{self.tokenizer.kind}{self.tokenizer.vocab_size}:{len(self.files)}files:{len(self.tokens)}T:"
                f"seq{self.seq_len}:{digest}")

    def sequence(self, index: int) -> torch.Tensor:
        check_index(index, self._count)
        start = index * (self.seq_len + 1)
        return self.tokens[start:start + self.seq_len + 1].long()


class SyntheticTokens:
    """Uniform random tokens, a pure function of (seed, index): for throughput runs with no disk reads."""

    def __init__(self, seq_len: int, vocab_size: int = BYTE_VOCAB_SIZE, num_sequences: int = 1 << 20,
                 seed: int = 0) -> None:
        for name, value in (("seq_len", seq_len), ("vocab_size", vocab_size), ("num_sequences", num_sequences)):
            if value <= 0:
                raise ValueError(f"SyntheticTokens.{name} must be positive, got {value}")
        self.seq_len = seq_len
        self.vocab_size = vocab_size
        self.num_sequences = num_sequences
        self.seed = seed

    def __len__(self) -> int:
        return self.num_sequences

    def fingerprint(self) -> str:
        return f"synthetic:vocab{self.vocab_size}:n{self.num_sequences}:seq{self.seq_len}:seed{self.seed}"

    def sequence(self, index: int) -> torch.Tensor:
        check_index(index, self.num_sequences)
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        return torch.randint(self.vocab_size, (self.seq_len + 1,), generator=generator)
