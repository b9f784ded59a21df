"""The server speaks through the model's tokenizer: large vocabularies, checkpoints, whole characters in streams."""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Iterator

import httpx
import pytest

from ai_system.cli import main
from ai_system.data.tokenizer import BPETokenizer, ByteTokenizer, Tokenizer, tokenizer_for_vocab, train_bpe
from ai_system.inference.engine import Engine, EngineConfig, Event, Request, load_model
from ai_system.inference.generate import SamplingParams, generate
from ai_system.models.config import get_config
from ai_system.models.pretrained import save_pretrained
from ai_system.models.transformer import Transformer
from ai_system.serving.server import build_engine, create_app, served_model
from ai_system.serving.threaded import ThreadedServer


def serve_args(**overrides: object) -> argparse.Namespace:
    return argparse.Namespace(**{"checkpoint": None, "config": None, "seed": 0, "device": "cpu", "threads": 1,
                                 **overrides})


def sse_texts(response: httpx.Response) -> tuple[list[str], dict]:
    """The text of every token event, and the final event."""
    events = [json.loads(line[6:]) for line in response.iter_lines()
              if line.startswith("data: ") and line != "data: [DONE]"]
    return [event["choices"][0]["text"] for event in events[:-1]], events[-1]


@pytest.fixture(scope="module")
def large_vocab(tmp_path_factory) -> Iterator[tuple[str, Transformer, Tokenizer]]:
    """The debug shape with a 32,000-token vocabulary and the corpus BPE, served from a checkpoint directory."""
    tokenizer = tokenizer_for_vocab(32000)
    model = Transformer(get_config("debug", vocab_size=32000))
    model.init_weights(seed=0)
    directory = tmp_path_factory.mktemp("checkpoints") / "debug-32k"
    save_pretrained(directory, model.config, model.state_dict(), tokenizer)
    spec, served_tokenizer, name = served_model(serve_args(checkpoint=str(directory)))
    engine = build_engine(spec, EngineConfig(max_batch_size=2), in_process=True)
    http = ThreadedServer(create_app(engine, served_tokenizer, name))
    http.start(ready=lambda: engine.ready)
    try:
        yield http.url, model.eval(), tokenizer
    finally:
        http.stop()


PROMPT = "def main() -> None:\n    print('héllo 🎉')\n"


def expected_tokens(model: Transformer, tokenizer: Tokenizer, max_tokens: int) -> list[int]:
    params = SamplingParams(max_new_tokens=max_tokens, stop_token=tokenizer.eos_id)
    return generate(model, [tokenizer.encode(PROMPT)], params)[0]


def test_a_32000_token_model_answers_with_tokens_past_the_bytes(large_vocab):
    url, model, tokenizer = large_vocab
    expected = expected_tokens(model, tokenizer, 12)
    assert max(expected) >= 256
    response = httpx.post(f"{url}/v1/completions", json={"prompt": PROMPT, "max_tokens": 12}, timeout=30)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == "debug-32k"
    assert body["choices"][0]["text"] == tokenizer.decode(expected)
    assert body["usage"]["prompt_tokens"] == len(tokenizer.encode(PROMPT)) < len(PROMPT.encode())
    assert body["usage"]["completion_tokens"] == len(expected)


def test_a_32000_token_model_streams_the_same_text(large_vocab):
    url, model, tokenizer = large_vocab
    expected = expected_tokens(model, tokenizer, 12)
    with httpx.stream("POST", f"{url}/v1/completions", json={"prompt": PROMPT, "max_tokens": 12, "stream": True},
                      timeout=30) as response:
        assert response.status_code == 200
        pieces, final = sse_texts(response)
    assert len(pieces) == len(expected)
    assert "".join(pieces) + final["choices"][0]["text"] == tokenizer.decode(expected)


class ScriptedEngine:
    """An ``Engine`` that answers every request with the same tokens: what the server does with them is the test."""

    def __init__(self, tokens: list[int], vocab_size: int) -> None:
        self.tokens = tokens
        self.vocab_size = vocab_size
        self.max_context = 128
        self.queue_depth = 0
        self.active = 0
        self.on_step = None
        self.running = self.ready = False

    def start(self) -> ScriptedEngine:
        self.running = self.ready = True
        return self

    def submit(self, request: Request) -> None:
        for token in self.tokens:
            request.generated.append(token)
            request.on_event(Event("token", token=token))
        request.on_event(Event("done", reason="length"))

    def cancel(self, request: Request) -> None:
        request.cancelled = True

    def stop(self, drain_timeout: float = 10.0) -> None:
        self.running = self.ready = False


@pytest.mark.parametrize("kind", ["byte", "bpe"])
def test_a_stream_never_splits_a_character_across_events(kind):
    tokenizer = ByteTokenizer() if kind == "byte" else train_bpe(["ascii text only, so accents stay bytes " * 20], 400)
    text = "é🦩 ok"
    tokens = tokenizer.encode(text)
    assert len(tokenizer.encode("🦩")) == 4
    if kind == "byte":
        tokens.append(0xFF)  # no UTF-8 sequence starts with it: U+FFFD at once
    engine = ScriptedEngine(tokens, tokenizer.vocab_size)
    assert isinstance(engine, Engine)
    with ThreadedServer(create_app(engine, tokenizer, "scripted")) as http:
        plain = httpx.post(f"{http.url}/v1/completions", json={"prompt": "x", "max_tokens": 8}, timeout=30).json()
        with httpx.stream("POST", f"{http.url}/v1/completions", json={"prompt": "x", "stream": True},
                          timeout=30) as response:
            pieces, final = sse_texts(response)
    whole = text + ("\ufffd" if kind == "byte" else "")
    assert plain["choices"][0]["text"] == whole
    assert len(pieces) == len(tokens) and "".join(pieces) + final["choices"][0]["text"] == whole
    nonempty = [piece for piece in pieces if piece]
    assert nonempty[0].startswith("é") and any(piece.startswith("🦩") for piece in nonempty)
    assert all("\ufffd" not in piece for piece in pieces[:len(tokenizer.encode(text))])


def test_random_weights_of_a_large_vocabulary_config_get_the_corpus_bpe():
    spec, tokenizer, name = served_model(serve_args(config="125M"))
    assert isinstance(tokenizer, BPETokenizer) and tokenizer.vocab_size == 32000
    assert (spec.config_name, spec.checkpoint, name) == ("125M", None, "125M")
    spec, tokenizer, name = served_model(serve_args())
    assert isinstance(tokenizer, ByteTokenizer) and name == "debug"


def test_serve_refuses_a_bad_checkpoint_in_one_line(tmp_path, capsys):
    model = load_model("debug")
    directory = save_pretrained(tmp_path / "ckpt", model.config, model.state_dict(), ByteTokenizer())
    config = json.loads((directory / "config.json").read_text())
    garbage = save_pretrained(tmp_path / "garbage", model.config, model.state_dict(), ByteTokenizer())
    (garbage / "model.safetensors").write_bytes(b"\x80\x04garbage, or a pickle" * 100)
    for argv, message in [
        (["--checkpoint", str(tmp_path / "missing")], "checkpoint directory .* does not exist"),
        (["--checkpoint", str(directory), "--config", "small"], "--config small is for random weights"),
        (["--checkpoint", str(garbage)], "model.safetensors"),
    ]:
        assert main(["serve", *argv]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("ai-system serve: ") and "weights_only" not in err
        assert re.search(message, err), err
    (directory / "config.json").write_text(json.dumps({**config, "model": {**config["model"], "dim": 128}}))
    assert main(["serve", "--checkpoint", str(directory), "--engine", "thread"]) == 2
    assert "has shape (64, 64), expected (128, 128)" in capsys.readouterr().err
