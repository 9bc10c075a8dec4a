import numpy as np
import pytest

torch = pytest.importorskip("torch")

from model.nn.geometry import euler_to_matrix, matrix_to_euler_degrees  # noqa: E402
from training.data.pose_sampling import SamplingConfig, WeightedStream, estimate_yaw, pose_balanced_weights  # noqa: E402


def test_yaw_is_recovered_from_projected_template_landmarks(topology):
    rng = np.random.default_rng(0)
    angles = torch.as_tensor(rng.uniform([-1.5, -0.4, -0.4], [1.5, 0.4, 0.4], (64, 3)), dtype=torch.float32)
    rotation = euler_to_matrix(angles[:, 0], angles[:, 1], angles[:, 2])
    template = topology.vertices[:468]
    posed = np.einsum("nij,vj->nvi", rotation.numpy(), template) * 600.0
    pixels = np.stack([posed[..., 0] + 96.0, 96.0 - posed[..., 1], -posed[..., 2]], axis=-1)  # y down
    expected = matrix_to_euler_degrees(rotation)[:, 0].numpy()
    np.testing.assert_allclose(estimate_yaw(pixels, template), expected, atol=0.05)
    assert estimate_yaw(np.zeros((0, 468, 3)), template).shape == (0,)


def test_balanced_sampling_flattens_a_skewed_yaw_histogram():
    rng = np.random.default_rng(1)
    # 5000 near-frontal faces, 300 at 40-50 degrees, 100 at 70-80 on either side, 10 at 80-90.
    yaw = np.concatenate([rng.uniform(-10, 10, 5000), rng.uniform(40, 50, 300) * rng.choice([-1, 1], 300),
                          rng.uniform(70, 80, 100) * rng.choice([-1, 1], 100), rng.uniform(80, 90, 10)])
    config = SamplingConfig(pose_balanced=True, bin_degrees=10, min_bin_count=50)
    sampler = WeightedStream(pose_balanced_weights(yaw, config), 30000, torch.Generator().manual_seed(0), chunk=1000)
    drawn = np.abs(yaw[list(sampler)])
    counts = np.bincount((drawn // 10).astype(int), minlength=9)
    full = counts[[0, 4, 7]]  # bins with at least min_bin_count faces: drawn equally often
    assert full.min() > 0.9 * full.max()
    assert counts[8] == pytest.approx(full.mean() * 10 / 50, rel=0.35)  # 10 faces count as 10 of 50
    assert counts[[1, 2, 3, 5, 6]].sum() == 0
    assert len(sampler) == 30000


def test_power_below_one_flattens_part_way():
    yaw = np.concatenate([np.full(900, 5.0), np.full(100, 55.0)])
    share = {}
    for power in (0.0, 0.5, 1.0):
        weights = pose_balanced_weights(yaw, SamplingConfig(pose_balanced=True, min_bin_count=1, power=power))
        share[power] = weights[900:].sum() / weights.sum()  # of draws at 50-60 degrees
    assert share[0.0] == pytest.approx(0.1) and share[1.0] == pytest.approx(0.5)
    assert share[0.0] < share[0.5] < share[1.0]
