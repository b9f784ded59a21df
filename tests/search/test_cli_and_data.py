"""``ai-system search`` end to end on tiny inputs, the text corpus, and the fleet projection."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from ai_system.cli import main
from ai_system.data.sources import stdlib_root
from ai_system.search.data import embed_texts, python_doc_paragraphs, recall_at_k
from ai_system.search.fleet import plan_fleet


def test_build_then_query(tmp_path, capsys):
    out = tmp_path / "index.bin"
    assert main(["search", "build", "--data", "clustered", "--n", "600", "--dim", "8", "--clusters", "5",
                 "--kind", "ivf_flat", "--nlist", "4", "--nprobe", "2", "--out", str(out)]) == 0
    built = json.loads(capsys.readouterr().out)
    assert built["size"] == 600 and built["kind"] == "ivf_flat"
    assert main(["search", "query", "--index", str(out), "--vector", json.dumps([0.5] * 8), "--k", "3"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert len(answer["ids"]) == 1 and len(answer["ids"][0]) == 3


def test_vectors_from_a_file(tmp_path, capsys):
    vectors = tmp_path / "vectors.npy"
    np.save(vectors, np.eye(4, dtype=np.float32))
    assert main(["search", "build", "--data", str(vectors), "--kind", "flat", "--metric", "l2",
                 "--out", str(tmp_path / "flat.bin")]) == 0
    capsys.readouterr()
    assert main(["search", "query", "--index", str(tmp_path / "flat.bin"), "--vector", "[0, 0, 1, 0]", "--k", "1"]) == 0
    assert json.loads(capsys.readouterr().out)["ids"] == [[2]]


@pytest.mark.parametrize(("argv", "message"), [
    (["query", "--index", "{tmp}/missing.bin"], "No such file"),
    (["query", "--index", "{tmp}/junk.bin"], "not an ai-system index file"),
    (["query", "--index", "{tmp}/flat.bin", "--k", "9"], r"k must be an integer in \[1, 4\]"),
    (["query", "--index", "{tmp}/flat.bin", "--vector", "[1, 2]"], r"shape \(rows, 4\)"),
    (["build", "--data", "nowhere.npy", "--out", "{tmp}/x.bin"], "--data must be clustered, python-docs or"),
])
def test_bad_arguments_print_one_line_and_exit_2(tmp_path, capsys, argv, message):
    np.save(tmp_path / "v.npy", np.eye(4, dtype=np.float32))
    main(["search", "build", "--data", str(tmp_path / "v.npy"), "--kind", "flat", "--out", str(tmp_path / "flat.bin")])
    (tmp_path / "junk.bin").write_bytes(b"junk")
    capsys.readouterr()
    assert main(["search", *[arg.replace("{tmp}", str(tmp_path)) for arg in argv]]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("ai-system search ")
    assert re.search(message, err), err


def test_serve_on_a_device_the_machine_lacks_is_one_line_exit_2(capsys):
    assert main(["search", "serve", "--index", "any.bin", "--device", "cuda:99"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "ai-system search serve: --device: expected a device this machine has, got 'cuda:99'" in err


def test_python_doc_paragraphs_are_real_documentation():
    """On one stdlib package (the whole library takes too long for CI): its docstrings, split at blank lines."""
    paragraphs = python_doc_paragraphs(root=stdlib_root() / "json")
    assert len(paragraphs) > 20 and len(set(paragraphs)) == len(paragraphs)
    assert all(len(p) >= 40 and "\n" not in p for p in paragraphs)
    assert any(p.startswith("Serialize ``obj`` as a JSON formatted stream") for p in paragraphs)


@pytest.mark.slow
def test_minilm_embeds_offline_and_similar_text_is_nearer():
    vectors = embed_texts(["Return the absolute value of a number.", "Return the absolute value of the argument.",
                           "Open a file and return a stream."])
    assert vectors.shape == (3, 384)
    torch.testing.assert_close(vectors.norm(dim=1), torch.ones(3), atol=1e-4, rtol=0)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2]


def test_recall_counts_shared_ids_and_ignores_missing_hits():
    truth = torch.tensor([[1, 2], [3, 4]])
    assert recall_at_k(torch.tensor([[2, 1], [3, -1]]), truth) == 0.75


def test_fleet_projection():
    plan = plan_fleet(measured_qps=1000, measured_p99_ms=20, latency_budget_ms=50, target_qps=10_000_000,
                      utilization=0.5, devices_per_host=8)
    assert plan.replicas == 20_000 and plan.hosts == 2500
    assert plan.projection(recall=0.95).inputs["measured_qps_per_replica"] == 1000
    with pytest.raises(ValueError, match="exceeds the 50 ms budget"):
        plan_fleet(1000, 60, 50)
