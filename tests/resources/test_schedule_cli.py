"""``ai-system schedule``: runs any policy on any node/pod list; bad input is one line and exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from ai_system.cli import main

SMALL_NODES = Path(__file__).parent / "data" / "openb_node_list_small.csv"
SMALL_PODS = Path(__file__).parent / "data" / "openb_pod_list_small.csv"


def test_fill_prints_the_curve_as_json(capsys):
    assert main(["schedule", "fill", "--nodes", str(SMALL_NODES), "--pods", str(SMALL_PODS), "--policy", "fgd",
                 "--json"]) == 0
    curve = json.loads(capsys.readouterr().out)
    assert curve["policy"] == "fgd" and len(curve["arrived_pct"]) == len(curve["unallocated_pct"]) > 20


def test_replay_and_manifests(capsys, tmp_path):
    assert main(["schedule", "replay", "--nodes", str(SMALL_NODES), "--pods", str(SMALL_PODS), "--policy",
                 "best-fit", "--offered-load", "2", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["started"] == 120 and summary["never_fit"] == 0
    assert main(["schedule", "manifests", "--nodes", str(SMALL_NODES), "--carve", "12", "--out", str(tmp_path)]) == 0
    queue = list(yaml.safe_load_all((tmp_path / "kueue-quotas.yaml").read_text()))[-1]
    assert queue["kind"] == "ClusterQueue"


def test_bad_input_is_one_line_and_exit_2(capsys, tmp_path):
    assert main(["schedule", "fill", "--nodes", str(tmp_path / "none.csv"), "--pods", str(SMALL_PODS)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no such file" in err[0]
    broken = tmp_path / "pods.csv"
    broken.write_text("name,cpu_milli,memory_mib,num_gpu,gpu_milli\nbad,-1,1,0,0\n")
    assert main(["schedule", "fill", "--nodes", str(SMALL_NODES), "--pods", str(broken)]) == 2
    err = capsys.readouterr().err
    assert "rejected bad: pods.csv:2: cpu_milli=-1" in err and "no valid task rows" in err
    no_times = tmp_path / "no_times.csv"
    no_times.write_text("name,cpu_milli,memory_mib,num_gpu,gpu_milli\nok,1000,1024,1,1000\n")
    assert main(["schedule", "replay", "--nodes", str(SMALL_NODES), "--pods", str(no_times)]) == 2
    assert "creation_time and deletion_time" in capsys.readouterr().err
    assert main(["schedule", "fill", "--nodes", str(SMALL_NODES), "--pods", str(SMALL_PODS), "--target-load",
                 "-1"]) == 2
    assert "target load must be positive" in capsys.readouterr().err
