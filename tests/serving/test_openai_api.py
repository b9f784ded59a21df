"""Standard clients unmodified: the official ``openai`` SDK against the real server on a loopback port.

Completions and chat, whole and streamed (with ``stream_options.include_usage``), the model list,
and every error as the SDK's own exception type carrying the server's message. The texts are checked
against plain ``generate()`` on the same prompt, so the API shape and the tokens are both right.
"""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest

from ai_system.data.tokenizer import ByteTokenizer
from ai_system.inference.engine import EngineConfig, EngineThread, load_model
from ai_system.inference.generate import SamplingParams, generate
from ai_system.serving.chat_template import format_chat
from ai_system.serving.server import create_app
from ai_system.serving.threaded import ThreadedServer
from serving.harness import break_model, running_server, wait_for

MESSAGES = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Say hi."}]


@pytest.fixture(scope="module")
def sdk(server) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=30) as client:
        yield client


def model_text(prompt: str, max_tokens: int) -> str:
    tokens = generate(load_model("debug", seed=0), [list(prompt.encode())], SamplingParams(max_new_tokens=max_tokens))
    return ByteTokenizer().decode(tokens[0])


def test_the_model_list_names_the_served_model(sdk):
    models = sdk.models.list()
    assert [model.id for model in models.data] == ["debug"]
    assert sdk.models.retrieve("debug").owned_by == "ai-system"
    with pytest.raises(openai.NotFoundError, match="model 'gpt-4' is not served here"):
        sdk.models.retrieve("gpt-4")


def test_a_completion_through_the_sdk(sdk):
    completion = sdk.completions.create(model="debug", prompt="hello", max_tokens=6)
    assert completion.object == "text_completion" and completion.id.startswith("cmpl-")
    assert completion.choices[0].text == model_text("hello", 6)
    assert completion.choices[0].finish_reason == "length"
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens, completion.usage.total_tokens) == \
        (5, 6, 11)


def test_a_streamed_completion_with_usage_through_the_sdk(sdk):
    chunks = list(sdk.completions.create(model="debug", prompt="hello", max_tokens=6, stream=True,
                                         stream_options={"include_usage": True}))
    assert "".join(chunk.choices[0].text for chunk in chunks if chunk.choices) == model_text("hello", 6)
    assert chunks[-2].choices[0].finish_reason == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 6
    assert all(chunk.usage is None for chunk in chunks[:-1])


def test_a_chat_completion_through_the_sdk_uses_the_documented_template(sdk):
    prompt = format_chat([(m["role"], m["content"]) for m in MESSAGES])
    assert prompt == "System: You are terse.\n\nUser: Say hi.\n\nAssistant:"
    chat = sdk.chat.completions.create(model="debug", messages=MESSAGES, max_completion_tokens=8)
    assert chat.object == "chat.completion" and chat.id.startswith("chatcmpl-")
    assert chat.choices[0].message.role == "assistant"
    assert chat.choices[0].message.content == model_text(prompt, 8)
    assert chat.usage.prompt_tokens == len(prompt.encode()) and chat.usage.completion_tokens == 8


def test_a_chat_without_max_tokens_fills_the_rest_of_the_context(sdk):
    chat = sdk.chat.completions.create(model="debug", messages=[{"role": "user", "content": "x"}])
    assert chat.usage.total_tokens == 128 and chat.choices[0].finish_reason == "length"


def test_a_streamed_chat_with_usage_through_the_sdk(sdk):
    chunks = list(sdk.chat.completions.create(model="debug", messages=MESSAGES, max_tokens=8, stream=True,
                                              stream_options={"include_usage": True}))
    whole = sdk.chat.completions.create(model="debug", messages=MESSAGES, max_tokens=8)
    assert chunks[0].choices[0].delta.role == "assistant" and chunks[0].object == "chat.completion.chunk"
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert text == whole.choices[0].message.content
    assert chunks[-2].choices[0].finish_reason == "length"
    assert chunks[-1].usage.prompt_tokens == whole.usage.prompt_tokens and chunks[-1].usage.completion_tokens == 8


def test_chat_content_may_be_a_list_of_text_parts(sdk):
    parts = [{"role": "user", "content": [{"type": "text", "text": "Say "}, {"type": "text", "text": "hi."}]}]
    as_parts = sdk.chat.completions.create(model="debug", messages=parts, max_tokens=4)
    as_text = sdk.chat.completions.create(model="debug", messages=[{"role": "user", "content": "Say hi."}],
                                          max_tokens=4)
    assert as_parts.choices[0].message.content == as_text.choices[0].message.content


@pytest.mark.parametrize(("call", "error", "message"), [
    (lambda c: c.completions.create(model="debug", prompt="hi", temperature=1.0, top_p=1e-46),
     openai.BadRequestError, "top_p must be in (0, 1] and not round to 0 in torch.float32"),
    (lambda c: c.completions.create(model="gpt-4", prompt="hi"), openai.NotFoundError, "not served here"),
    (lambda c: c.chat.completions.create(model="debug", messages=MESSAGES, n=2), openai.BadRequestError,
     "n=2 is not supported"),
    (lambda c: c.chat.completions.create(model="debug", messages=MESSAGES, stop=["\n"]),
     openai.BadRequestError, 'stop=["\\n"] is not supported'),
    (lambda c: c.completions.create(model="debug", prompt="hi", max_tokens=10**6, stream=True),
     openai.BadRequestError, "exceeds the context of 128 tokens"),
])
def test_errors_surface_as_the_sdks_exception_types_with_our_messages(sdk, call, error, message):
    with pytest.raises(error) as raised:
        call(sdk)
    assert message in raised.value.message and message in raised.value.body["message"]


def test_a_wrong_api_key_is_the_sdks_authentication_error():
    with running_server(EngineConfig(max_batch_size=1), api_key="s3cret") as server:
        with openai.OpenAI(base_url=f"{server.url}/v1", api_key="guess", max_retries=0) as wrong, \
                openai.OpenAI(base_url=f"{server.url}/v1", api_key="s3cret", max_retries=0) as right:
            with pytest.raises(openai.AuthenticationError, match="missing or wrong API key"):
                wrong.models.list()
            assert right.completions.create(model="debug", prompt="hi", max_tokens=2).usage.completion_tokens == 2


def test_a_full_queue_is_the_sdks_rate_limit_error(slow_server_factory):
    server = slow_server_factory(max_batch_size=1, max_queue_size=1)
    with openai.OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0, timeout=30) as client:
        running = client.completions.create(model="debug", prompt="busy", max_tokens=100, stream=True)
        next(iter(running))
        queued = client.completions.create(model="debug", prompt="wait", max_tokens=100, stream=True)
        wait_for(lambda: server.engine.queue_depth == 1)
        with pytest.raises(openai.RateLimitError, match="request queue is full"):
            client.completions.create(model="debug", prompt="one more", max_tokens=2)
        running.close()
        queued.close()


def test_an_engine_failure_mid_stream_is_the_sdks_api_error():
    """The engine fails the one request whose iteration raised; the stream ends with an error event,
    which the SDK raises as ``APIError`` with the engine's message."""
    engine = EngineThread(break_model(load_model("debug", seed=0), "device lost", calls={3}),
                          EngineConfig(max_batch_size=1))
    http = ThreadedServer(create_app(engine, ByteTokenizer(), "debug"))
    http.start(ready=lambda: engine.ready)
    try:
        with openai.OpenAI(base_url=f"{http.url}/v1", api_key="x", max_retries=0) as client:
            stream = client.completions.create(model="debug", prompt="hi", max_tokens=10, stream=True)
            with pytest.raises(openai.APIError, match="engine iteration failed: RuntimeError: device lost"):
                list(stream)
            assert client.completions.create(model="debug", prompt="hi", max_tokens=3).usage.completion_tokens == 3
    finally:
        http.stop()
