import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("cv2")

from model.nn.geometry import euler_to_matrix  # noqa: E402
from training.data.augment import AugmentConfig, augment  # noqa: E402
from training.data.dataset import PreparedFaces  # noqa: E402
from training.data.pose_sampling import estimate_yaw  # noqa: E402
from training.data.shards import write_shard  # noqa: E402
from training.data.synthesize import (  # noqa: E402
    PosedFace,
    SynthesisConfig,
    build_scene,
    encode_sample,
    load_reconstructor,
    network_crop,
    plan_turns,
    render_view,
    view_name,
)
from training.tools.topology_builder import IBUG68_FROM_MEDIAPIPE  # noqa: E402

SIZE = 192
FULL = np.array([0, 0, SIZE, SIZE], np.float32)


def template_face(topology, yaw: float = 0.0, pitch: float = 0.0, pixels_per_metre: float = 640.0) -> PosedFace:
    """The template posed at (yaw, pitch) degrees in the middle of a stored crop."""
    angles = [torch.tensor([np.radians(a)], dtype=torch.float32) for a in (yaw, pitch, 0.0)]
    rotation = euler_to_matrix(*angles)[0].numpy()
    posed = topology.vertices @ rotation.T * pixels_per_metre
    screen = np.stack([SIZE / 2 + posed[:, 0], SIZE / 2 - posed[:, 1], posed[:, 2]], axis=1)
    return PosedFace(screen.astype(np.float32), rotation)


def dotted_texture(points: np.ndarray, colours: list[tuple[int, int, int]]) -> np.ndarray:
    """A mid-grey noisy crop with a 5-pixel dot of each colour at each point (K, 2+)."""
    import cv2

    texture = np.clip(np.random.default_rng(0).normal(120, 10, (SIZE, SIZE, 3)), 0, 255).astype(np.uint8)
    for (x, y), colour in zip(points[:, :2], colours):
        centre = (int(round((x - 0.5) * 8)), int(round((y - 0.5) * 8)))  # OpenCV: pixel centres at integers
        cv2.circle(texture, centre, 2 * 8, colour, -1, lineType=cv2.LINE_AA, shift=3)
    return texture


def dot_centre(image: np.ndarray, colour: tuple[int, int, int], near: np.ndarray, reach: int = 12) -> np.ndarray:
    """Centre of the pixels of ``colour`` within ``reach`` of ``near`` (the random background
    around the photo may hold any colour further away)."""
    distance = np.abs(image.astype(int) - np.array(colour)).sum(axis=2)
    ys, xs = np.nonzero(distance < 120)
    close = np.hypot(xs + 0.5 - near[0], ys + 0.5 - near[1]) < reach
    assert close.sum() >= 4, "dot not visible"
    return np.array([xs[close].mean() + 0.5, ys[close].mean() + 0.5])


@pytest.mark.parametrize("turn, landmarks", [
    ((40.0, 10.0, 5.0), (1, 33, 61)),  # nose tip, then eye and mouth corners on the side turned toward the camera
    ((-65.0, -15.0, 0.0), (4, 168, 263)),
    ((0.0, 20.0, -12.0), (1, 263, 291)),
])
def test_a_dot_on_a_landmark_is_drawn_where_the_turned_landmark_projects(topology, turn, landmarks):
    face = template_face(topology, yaw=10.0, pitch=5.0)
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    scene = build_scene(dotted_texture(face.vertices[list(landmarks)], colours), FULL, face, topology,
                        SynthesisConfig())
    view = render_view(scene, *turn, np.random.default_rng(0), SynthesisConfig())
    for landmark, colour in zip(landmarks, colours):
        target = view.landmarks[landmark, :2]
        error = np.linalg.norm(dot_centre(view.image, colour, target) - target)
        assert error < 1.5, f"landmark {landmark}: {error:.2f} px"


def test_views_are_framed_like_prepared_crops(topology):
    face = template_face(topology)
    scene = build_scene(dotted_texture(np.zeros((0, 2)), []), FULL, face, topology, SynthesisConfig())
    for yaw in (-90.0, -45.0, 30.0, 90.0):
        view = render_view(scene, yaw, 0.0, 0.0, np.random.default_rng(0), SynthesisConfig())
        box = view.landmarks[IBUG68_FROM_MEDIAPIPE, :2]
        side = (box.max(axis=0) - box.min(axis=0)).max()
        assert side == pytest.approx(SIZE / 1.8, rel=1e-4)  # prepare's STORED_MARGIN around the 68-point box
        np.testing.assert_allclose((box.max(axis=0) + box.min(axis=0)) / 2, SIZE / 2, atol=1e-3)
        assert view.inpainted < 0.05


def test_yaw_labels_match_the_turn_and_the_shards_load(topology, tmp_path):
    config = SynthesisConfig()
    face = template_face(topology)
    scene = build_scene(dotted_texture(np.zeros((0, 2)), []), FULL, face, topology, config)
    turns = [(-80.0, 0.0, 0.0), (-35.0, 12.0, 0.0), (20.0, 0.0, 10.0), (70.0, -15.0, 0.0)]
    views = [render_view(scene, *turn, np.random.default_rng(0), config) for turn in turns]
    yaws = np.array([view.euler[0] for view in views], np.float32)
    np.testing.assert_allclose(yaws, [t[0] for t in turns], atol=0.01)  # the template starts frontal
    names = [view_name("lfw/Ann_Lee/Ann_Lee_0001.jpg", yaw) for yaw in yaws]
    assert names[0] == "lfw/Ann_Lee/Ann_Lee_0001_yaw-80"
    write_shard(tmp_path / "shard_00000.npz", [encode_sample(v) for v in views], names, [False, False, False, True],
                extra={"yaw": yaws})

    train = PreparedFaces(tmp_path, "train", topology, AugmentConfig())
    val = PreparedFaces(tmp_path, "val", topology, AugmentConfig())
    assert (len(train), len(val)) == (3, 1)
    np.testing.assert_array_equal(np.concatenate([train.yaw, val.yaw]), yaws)
    # Views of one photo of a person's folder: renders of the model's face, no one's for the identity terms.
    assert (train.person == -1).all()
    # The labels agree with their yaw: a pose fitted to the written landmarks finds it again.
    np.testing.assert_allclose(estimate_yaw(train.landmarks, topology.vertices[:468]), yaws[:3], atol=1.5)
    item = val[0]
    assert item["image"].shape == (3, 128, 128) and item["landmarks"].shape == (468, 2)


def test_turn_plans_spread_both_ways_and_stay_within_reach():
    config = SynthesisConfig(yaw_max=90.0, per_image=2, max_turn=90.0)
    rng = np.random.default_rng(0)
    frontal = np.array([plan_turns(0.0, 2, rng, config) for _ in range(500)])  # (500, 2, 3)
    assert (frontal[:, 0, 0] < 0).all() and (frontal[:, 1, 0] > 0).all()  # one view on each side
    counts, _ = np.histogram(frontal[..., 0], bins=np.arange(-90, 91, 30))
    assert counts.min() > 0.8 * counts.max()  # flat
    assert np.abs(frontal[..., 1]).max() <= 20 and np.abs(frontal[..., 2]).max() <= 15
    turned = np.array([plan_turns(50.0, 2, rng, config) for _ in range(500)])
    assert np.abs(turned[..., 0]).max() <= 90.0  # targets beyond reach go to the other side


def test_the_reconstruction_crop_is_the_trainers_validation_crop(synthetic_data, topology):
    data = PreparedFaces(synthetic_data, "val", topology, AugmentConfig())
    stored, landmarks = data.stored_image(0), data.landmarks[0]
    crop, matrix = network_crop(stored, landmarks, 128)
    sample = augment(stored, landmarks, data.valid[0], topology.mirror[:468], IBUG68_FROM_MEDIAPIPE,
                     np.random.default_rng(0), AugmentConfig(), train=False)
    np.testing.assert_array_equal(crop, sample.image)
    np.testing.assert_allclose(landmarks[:, :2] @ matrix[:, :2].T + matrix[:, 2], sample.landmarks, atol=1e-4)


def test_checkpoint_and_onnx_reconstruct_alike(face_model, onnx_model, topology, tmp_path):
    from training.checkpoint import save_checkpoint

    save_checkpoint(tmp_path / "model.pt", face_model, steps=0)
    crops = np.random.default_rng(0).integers(0, 256, (2, 128, 128, 3), dtype=np.uint8)
    onnx, checkpoint = (load_reconstructor(p, topology) for p in (onnx_model, tmp_path / "model.pt"))
    assert onnx.input_size == checkpoint.input_size == 128
    assert checkpoint.description.endswith("(0 training steps)")
    for a, b in zip(onnx.run(crops), checkpoint.run(crops)):
        np.testing.assert_allclose(a, b, atol=1e-3)


def test_synthesize_command_end_to_end(synthetic_data, onnx_model, topology, tmp_path):
    from service.cli import main

    out, sheet = tmp_path / "posed", tmp_path / "sheet.png"
    args = ["synthesize", "--data", str(synthetic_data), "--out", str(out), "--per-image", "2", "--limit", "12",
            "--model", str(onnx_model), "--contact-sheet", str(sheet), "--sheet-faces", "2", "-q"]
    assert main(args) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert (manifest["images"], manifest["sources"]) == (24, 12)
    assert sum(manifest["yaw_histogram"].values()) == 24 and len(manifest["yaw_histogram"]) == 18
    assert manifest["seconds"] > 0 and manifest["images_per_second"] > 0
    assert manifest["model"] == f"{onnx_model} (0 training steps)"

    with np.load(out / "shard_00000.npz") as shard, np.load(synthetic_data / "shard_00000.npz") as source:
        assert shard["landmarks"].shape == (24, 468, 3) and shard["yaw"].shape == (24,)
        np.testing.assert_array_equal(shard["valid"], np.tile(FULL, (24, 1)))
        origin = {str(n).removesuffix(".jpg"): v for n, v in zip(source["names"], source["is_val"])}
        for name, is_val, yaw in zip(shard["names"], shard["is_val"], shard["yaw"]):
            stem, _, label = str(name).rpartition("_yaw")
            assert origin[stem] == is_val and int(label) == round(float(yaw))
    both = [PreparedFaces(out, split, topology, AugmentConfig()) for split in ("train", "val")]
    assert sum(len(d) for d in both) == 24 and len(both[1]) > 0
    assert both[0][0]["image"].shape == (3, 128, 128)

    from PIL import Image

    assert Image.open(sheet).size == (8 * 192, 2 * 192)  # the stored crop and seven yaws per face
    stamp = (out / "shard_00000.npz").stat().st_mtime_ns
    assert main(args[:11] + ["-q"]) == 0  # a second run (no sheet) keeps the finished shards
    assert (out / "shard_00000.npz").stat().st_mtime_ns == stamp
