"""Benchmark clients unmodified: the hub-cache tokenizer they load, and GuideLLM run against the server.

GuideLLM (and AIPerf) load the model's tokenizer with ``transformers`` by model id; offline they find
it in a hub cache that ``ai-system hub-cache`` writes. The tokenizer there must count what the server
counts and format chats as the server does. GuideLLM then benchmarks a real server for a few seconds
(chat, streamed, usage) with no patch. AIPerf is not run here: see docs/systems/serving.md.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ai_system.cli import main
from ai_system.data.tokenizer import ByteTokenizer, train_bpe
from ai_system.inference.engine import EngineConfig, EngineThread, load_model
from ai_system.serving.chat_template import format_chat
from ai_system.serving.hub_cache import write_hub_cache
from ai_system.serving.server import create_app
from ai_system.serving.threaded import ThreadedServer
from serving.harness import metric_samples, wait_for

TEXTS = ["hello world", "def main() -> None:\n    print('héllo 🎉')\n", "  two  spaces\tand a tab"]
CHAT = [("system", "Be terse."), ("user", "Hi {{ there }}"), ("assistant", "Hello."), ("user", "Bye")]


@pytest.mark.parametrize("kind", ["byte", "bpe"])
def test_the_hub_cache_tokenizer_counts_and_formats_as_the_server_does(tmp_path, kind):
    transformers = pytest.importorskip("transformers", reason="transformers comes with the dev extra (guidellm)")
    tokenizer = ByteTokenizer() if kind == "byte" else train_bpe([text * 20 for text in TEXTS], 400)
    snapshot = write_hub_cache(tokenizer, f"ai-system/test-{kind}", 128, tmp_path)
    repo = tmp_path / "hub" / f"models--ai-system--test-{kind}"
    assert (repo / "refs" / "main").read_text() == snapshot.name and snapshot.parent == repo / "snapshots"
    loaded = transformers.AutoTokenizer.from_pretrained(f"ai-system/test-{kind}", cache_dir=tmp_path / "hub",
                                                        local_files_only=True)
    for text in TEXTS:
        assert loaded.encode(text, add_special_tokens=False) == tokenizer.encode(text)
        assert loaded.decode(tokenizer.encode(text)) == text
    messages = [{"role": role, "content": content} for role, content in CHAT]
    assert loaded.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) == format_chat(CHAT)
    assert loaded.model_max_length == 128


def test_hub_cache_command_refuses_a_bad_repo_id_in_one_line(tmp_path, capsys):
    assert main(["hub-cache", "--repo-id", "../escape", "--hf-home", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "repo id must look like ORG/NAME" in err
    assert main(["hub-cache", "--repo-id", "ai-system/debug", "--hf-home", str(tmp_path)]) == 0
    assert (tmp_path / "hub" / "models--ai-system--debug" / "refs" / "main").is_file()


@pytest.mark.slow
def test_guidellm_benchmarks_the_server_unmodified(tmp_path):
    """GuideLLM checks ``/health``, reads ``/v1/models``, then streams chat completions with usage; 8
    requests, 2 at a time. Every request it reports must have succeeded with exactly the asked number
    of output tokens, and the server must have answered all 8 without an error.

    GuideLLM 0.8 can finalize its report while its last request is still in flight (seen once on
    the contended machine: the server answered all 8, the report counted 7 of 7), so the number of
    requests in the report is not pinned; the server's own count is."""
    pytest.importorskip("guidellm", reason="GuideLLM comes with the dev extra")
    engine = EngineThread(load_model("debug", seed=0), EngineConfig(max_batch_size=4))
    http = ThreadedServer(create_app(engine, ByteTokenizer(), "ai-system/debug"))
    http.start(ready=lambda: engine.ready)
    write_hub_cache(ByteTokenizer(), "ai-system/debug", engine.max_context, tmp_path / "hf")
    report = tmp_path / "benchmarks.json"
    try:
        run = subprocess.run(
            [str(Path(sys.executable).parent / "guidellm"), "run",
             "--backend", f"kind=openai_http,target={http.url},model=ai-system/debug",
             "--profile", "kind=concurrent,streams=2", "--constraint", "kind=max_requests,count=8",
             "--data", "kind=synthetic_text,prompt_tokens=16,output_tokens=8",
             "--output", f"kind=json,path={report}", "--disable-progress"],
            env={**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"},
            capture_output=True, text=True, timeout=300)
        wait_for(lambda: engine.active == 0 and engine.queue_depth == 0)
        served = metric_samples(http.url)
    finally:
        http.stop()
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert served['aisys_request_latency_seconds_count{stream="true"}'] == 8
    assert sum(value for name, value in served.items() if name.startswith("aisys_request_errors_total")) == 0
    benchmark = json.loads(report.read_text())["benchmarks"][0]
    totals = benchmark["metrics"]["request_totals"]
    assert totals["successful"] >= 1 and totals["errored"] == 0 and totals["incomplete"] == 0, totals
    output_tokens = benchmark["metrics"]["output_token_count"]["successful"]
    assert output_tokens["min"] == output_tokens["max"] == 8
