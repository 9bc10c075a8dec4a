import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("cv2")

from training.data.augment import AugmentConfig, augment, crop_matrix  # noqa: E402
from training.data.dataset import PreparedFaces  # noqa: E402


def test_split_sizes_and_item_shapes(synthetic_data, topology):
    train = PreparedFaces(synthetic_data, "train", topology, AugmentConfig())
    val = PreparedFaces(synthetic_data, "val", topology, AugmentConfig())
    assert (len(train), len(val)) == (20, 4)
    item = train[0]
    assert item["image"].shape == (3, 128, 128) and item["image"].dtype == torch.float32
    assert item["landmarks"].shape == (468, 2)
    assert item["photo_mask"].shape == (128, 128)
    with pytest.raises(ValueError):
        PreparedFaces(synthetic_data, "test", topology, AugmentConfig())


def test_validation_crop_is_the_nominal_box_crop(synthetic_data, topology):
    val = PreparedFaces(synthetic_data, "val", topology, AugmentConfig())
    first, again = val[0], val[0]
    assert torch.equal(first["image"], again["image"])
    from training.tools.topology_builder import IBUG68_FROM_MEDIAPIPE

    box = first["landmarks"][IBUG68_FROM_MEDIAPIPE]
    side = (box.max(0).values - box.min(0).values).max()
    assert side.item() == pytest.approx(128 / 1.3, rel=1e-3)


def test_landmarks_follow_the_image_through_every_augmentation(topology):
    """A bright dot at one landmark must stay under that landmark's target."""
    from training.tools.topology_builder import IBUG68_FROM_MEDIAPIPE

    rng = np.random.default_rng(0)
    landmarks = np.zeros((468, 3), np.float32)
    landmarks[:, :2] = rng.uniform(50, 140, (468, 2))
    nose = 1  # on the midline: its own mirror, so the dot stays under it when mirrored
    assert topology.mirror[nose] == nose
    landmarks[nose, :2] = (95.0, 95.0)
    stored = np.zeros((192, 192, 3), np.uint8)
    stored[92:99, 92:99] = 255
    config = AugmentConfig(colour_probability=0, grey_probability=0, blur_probability=0, occluder_probability=0)
    mirror = topology.mirror[:468]
    for seed in range(10):
        sample = augment(stored, landmarks, np.array([0, 0, 192, 192], np.float32), mirror, IBUG68_FROM_MEDIAPIPE,
                         np.random.default_rng(seed), config)
        ys, xs = np.nonzero(sample.image[..., 0] > 200)
        centre = np.array([xs.mean() + 0.5, ys.mean() + 0.5])
        assert np.linalg.norm(centre - sample.landmarks[nose]) < 1.5


def test_padding_is_replaced_and_masked(topology):
    from training.tools.topology_builder import IBUG68_FROM_MEDIAPIPE

    stored = np.full((192, 192, 3), 128, np.uint8)
    landmarks = np.zeros((468, 3), np.float32)
    landmarks[:, :2] = np.random.default_rng(1).uniform(60, 130, (468, 2))
    valid = np.array([60, 60, 130, 130], np.float32)  # the photo is only the middle
    sample = augment(stored, landmarks, valid, topology.mirror[:468], IBUG68_FROM_MEDIAPIPE,
                     np.random.default_rng(3), AugmentConfig(occluder_probability=0, colour_probability=0))
    assert 0.2 < sample.photo_mask.mean() < 0.95
    outside = sample.image[~sample.photo_mask]
    assert np.abs(outside.astype(int) - 128).mean() > 5  # random background, not the edge colour


def test_crop_matrix_maps_the_box_centre_to_the_crop_centre():
    points = np.array([[10.0, 20.0], [50.0, 100.0]])
    matrix = crop_matrix(points, points, 128, 1.3, angle_deg=30.0)
    centre = matrix[:, :2] @ np.array([30.0, 60.0]) + matrix[:, 2]
    np.testing.assert_allclose(centre, [64, 64], atol=1e-9)


def test_several_folders_load_as_one_set_with_a_yaw_per_sample(synthetic_data, topology):
    one = PreparedFaces(synthetic_data, "train", topology, AugmentConfig())
    both = PreparedFaces([synthetic_data, synthetic_data], "train", topology, AugmentConfig())
    assert len(both) == 2 * len(one)
    np.testing.assert_array_equal(both.landmarks[len(one):], one.landmarks)
    np.testing.assert_array_equal(both.yaw, np.tile(one.yaw, 2))
    # The fixture's faces turn up to 0.4 rad (23 degrees) each way; shards without a yaw get it estimated.
    assert np.abs(one.yaw).max() < 30 and np.abs(one.yaw).max() > 5


def test_teacher_embeddings_and_people_reach_the_samples(synthetic_data, topology, tmp_path):
    import shutil

    from training.data.identity_embeddings import EMBEDDINGS_FILE
    from training.data.shards import read_shard, write_shard

    root = tmp_path / "prepared"
    root.mkdir()
    shard = read_shard(synthetic_data / "shard_00000.npz")
    names = [f"lfw/person_{i // 2}/{i}.jpg" if i < 8 else f"utkface/{i}.jpg" for i in range(len(shard["names"]))]
    samples = [{"jpeg": shard["jpeg"][shard["offsets"][i]: shard["offsets"][i + 1]], "landmarks": shard["landmarks"][i],
                "valid": shard["valid"][i]} for i in range(len(names))]
    write_shard(root / "shard_00000.npz", samples, names, [False] * len(names))
    vectors = np.random.default_rng(0).normal(size=(8, 128)).astype(np.float32)
    np.savez(root / EMBEDDINGS_FILE, names=np.array(names[:8]), embeddings=vectors)
    data = PreparedFaces(root, "train", topology, AugmentConfig())
    assert data.person[0] == data.person[1] != data.person[2] and (data.person[8:] == -1).all()
    np.testing.assert_array_equal(data[3]["embedding"].numpy(), vectors[3])
    assert data[9]["embedding"].abs().sum() == 0
    shutil.rmtree(root)
