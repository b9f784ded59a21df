from __future__ import annotations

import torch

from ai_system.planning.measure import LiveTensorMemory


def test_live_tensor_memory_counts_storages_once_and_frees_them() -> None:
    tracker = LiveTensorMemory()
    weight = torch.zeros(256)
    tracker.track(weight, weight[:10])
    assert tracker.current == 1024
    with tracker:
        a = torch.ones(1024)
        view = a[:512]
        b = a * 2
        assert tracker.current == 1024 + 2 * 4096
        del a, b
        assert tracker.current == 1024 + 4096
        del view
        c = torch.empty(100)
        c.untyped_storage().resize_(0)
        assert tracker.current == 1024
    assert tracker.peak == 1024 + 2 * 4096
    tracker.reset_peak()
    assert tracker.peak == tracker.current
