"""The FSDP scaling projection follows its stated formula."""

from __future__ import annotations

import pytest

from ai_system.training.projection import project_fsdp


def test_no_overlap_adds_the_ring_volume_over_the_link():
    p = project_fsdp(single_device_samples_per_s=10.0, samples_per_device_step=4, num_params=1_000_000,
                     world_size=4, link_bandwidth_bytes_per_s=1e9)
    assert p.comm_bytes_per_rank == pytest.approx(1e6 * 8 * 3 / 4)
    assert p.comm_time_s == pytest.approx(6e-3)
    assert p.step_time_s == pytest.approx(0.4 + 6e-3)
    assert p.samples_per_s == pytest.approx(16 / 0.406)
    assert p.scaling_efficiency == pytest.approx(0.4 / 0.406)


def test_full_overlap_hides_communication_shorter_than_compute():
    hidden = project_fsdp(10.0, 4, 1_000_000, 32, 1e9, overlap=True)
    assert hidden.scaling_efficiency == pytest.approx(1.0)
    exposed = project_fsdp(10.0, 4, 1_000_000_000, 32, 1e9, overlap=True)
    assert exposed.step_time_s == pytest.approx(exposed.comm_time_s) and exposed.scaling_efficiency < 1


def test_one_device_needs_no_communication():
    assert project_fsdp(10.0, 4, 10**9, 1, 1e9).samples_per_s == pytest.approx(10.0)


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="link_bandwidth_bytes_per_s must be positive, got 0"):
        project_fsdp(10.0, 4, 10, 2, 0)
