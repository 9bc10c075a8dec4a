import argparse
import json
import math
import shutil

import numpy as np
import pytest

from model.runtime.detector import DEFAULT_DETECTOR
from model.runtime.reconstructor import DEFAULT_MODEL
from service.cli import CLIError, CommandParser
from tests.conftest import SHARED_DATA
from training.cli import register_evaluate_identity
from training.evaluate_identity import (
    different_pairs,
    distance_ratio,
    expression_leak,
    json_safe,
    mouth_measures,
    pair_distances,
    procrustes_align,
    same_pairs,
    spread_mm,
    verification_auc,
)

LFW = SHARED_DATA / "train" / "lfw"
KEYS = ("auc_neutral", "auc_canonical", "distance_ratio_neutral", "distance_ratio_canonical", "spread_mm_neutral",
        "spread_mm_canonical", "leak_mouth_opening", "leak_smile_width", "people", "photos", "photos_failed",
        "same_pairs", "different_pairs")


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def parser() -> argparse.ArgumentParser:
    root = CommandParser(prog="facerecon")
    register_evaluate_identity(root.add_subparsers(dest="command", required=True, parser_class=CommandParser))
    return root


def test_auc_of_separated_reversed_and_tied_scores():
    same = np.array([True, True, True, False, False])
    assert verification_auc(np.array([5.0, 4.0, 3.0, 2.0, 1.0]), same) == 1.0
    assert verification_auc(np.array([1.0, 2.0, 3.0, 4.0, 5.0]), same) == 0.0
    assert verification_auc(np.zeros(5), same) == 0.5
    assert math.isnan(verification_auc(np.ones(3), np.ones(3, bool)))


def test_auc_matches_counting_pairs_with_ties():
    rng = np.random.default_rng(1)
    scores = rng.integers(0, 6, 80).astype(float)  # many ties
    same = rng.random(80) < 0.3
    positives, negatives = scores[same], scores[~same]
    wins = (positives[:, None] > negatives[None]).sum() + 0.5 * (positives[:, None] == negatives[None]).sum()
    assert verification_auc(scores, same) == pytest.approx(wins / (len(positives) * len(negatives)))


def test_procrustes_recovers_a_similarity_transform():
    rng = np.random.default_rng(0)
    source = rng.normal(size=(2, 200, 3))
    rotations = np.stack([random_rotation(rng) for _ in range(2)])
    scales = np.array([1.7, 0.4])
    shifts = rng.normal(size=(2, 1, 3))
    target = scales[:, None, None] * source @ np.swapaxes(rotations, 1, 2) + shifts
    np.testing.assert_allclose(procrustes_align(source, target, scale=True), target, atol=1e-9)
    rigid = source @ np.swapaxes(rotations, 1, 2) + shifts  # without scale: rotation + translation only
    np.testing.assert_allclose(procrustes_align(source, rigid, scale=False), rigid, atol=1e-9)
    # without scale a scaled copy keeps its size: the residual is not zero
    assert np.abs(procrustes_align(source, target, scale=False) - target).max() > 0.1
    # a mirror image is not matched by a reflection
    mirrored = source[0] * np.array([-1.0, 1.0, 1.0])
    assert np.abs(procrustes_align(source[0], mirrored, scale=True) - mirrored).max() > 0.1


def test_pair_distances_ignore_pose_and_size_and_are_symmetric():
    rng = np.random.default_rng(2)
    base = rng.normal(size=(300, 3))
    other = base + rng.normal(scale=0.2, size=base.shape)
    moved = 2.5 * base @ random_rotation(rng).T + np.array([1.0, -2.0, 3.0])
    meshes = np.stack([base, moved, other]).astype(np.float32)
    distances = pair_distances(meshes, np.array([[0, 1], [0, 2], [2, 0], [1, 2]]), size=1.0, batch=3)
    assert distances[0] == pytest.approx(0.0, abs=1e-5)
    assert distances[1] > 0.05
    assert distances[2] == pytest.approx(distances[1], rel=1e-4)
    assert distances[3] == pytest.approx(distances[1], rel=1e-4)
    # the distances are in units of the given centroid size
    doubled = pair_distances(meshes, np.array([[0, 2]]), size=2.0)
    assert doubled[0] == pytest.approx(2 * distances[1], rel=1e-4)


def test_distance_ratio_of_identical_meshes_is_one():
    assert distance_ratio(np.array([1.0, 3.0]), np.array([4.0])) == pytest.approx(0.5)
    assert distance_ratio(np.full(3, 1e-17), np.full(4, 1e-17)) == 1.0
    assert math.isnan(distance_ratio(np.array([1.0]), np.zeros(2)))
    assert json_safe({"a": float("nan"), "b": 1.5, "c": 2}) == {"a": None, "b": 1.5, "c": 2}


def test_same_and_different_pairs():
    labels = np.array([0, 0, 1, 1, 1, 2])
    same = same_pairs(labels)
    assert sorted(map(tuple, same.tolist())) == [(0, 1), (2, 3), (2, 4), (3, 4)]
    every = different_pairs(labels, max_pairs=None)
    assert len(every) == 15 - 4 and (labels[every[:, 0]] != labels[every[:, 1]]).all()
    subset = different_pairs(labels, max_pairs=5, seed=3)
    assert len(subset) == 5 and len({tuple(p) for p in subset.tolist()}) == 5
    assert (labels[subset[:, 0]] != labels[subset[:, 1]]).all() and (subset[:, 0] < subset[:, 1]).all()
    np.testing.assert_array_equal(subset, different_pairs(labels, max_pairs=5, seed=3))


def mouth_meshes(topology, openings: np.ndarray, widths: np.ndarray) -> np.ndarray:
    """Template copies with the inner lips opened and the mouth corners pulled apart (metres)."""
    landmarks = topology.landmarks68
    meshes = np.repeat(topology.vertices[None].astype(np.float64), len(openings), axis=0)
    meshes[:, landmarks[66], 1] -= openings
    meshes[:, landmarks[48], 0] -= widths / 2
    meshes[:, landmarks[54], 0] += widths / 2
    return meshes


def test_expression_leak_is_one_when_passed_through_and_zero_when_removed(topology):
    rng = np.random.default_rng(4)
    canonical = mouth_meshes(topology, rng.uniform(0, 0.02, 12), rng.uniform(0, 0.01, 12))
    through = expression_leak(canonical, canonical, topology.landmarks68)
    assert through["mouth_opening"] == pytest.approx(1.0) and through["smile_width"] == pytest.approx(1.0)
    constant = np.repeat(topology.vertices[None], 12, axis=0)
    removed = expression_leak(constant, canonical, topology.landmarks68)
    assert removed["mouth_opening"] == pytest.approx(0.0, abs=1e-12)
    assert removed["smile_width"] == pytest.approx(0.0, abs=1e-12)
    opening, width = mouth_measures(canonical, topology.landmarks68)
    assert opening.std() > 0 and width.std() > 0


def test_spread_of_identical_meshes_is_zero_and_of_offsets_is_the_offset(topology):
    template = topology.vertices.astype(np.float64)
    rng = np.random.default_rng(5)
    # the same face in other poses: alignment removes rotation and translation
    posed = np.stack([template @ random_rotation(rng).T + rng.normal(scale=0.1, size=3) for _ in range(4)])
    assert spread_mm(posed, np.array([0, 0, 1, 1]), template) == pytest.approx(0.0, abs=1e-6)
    # two people offset by +-2 mm along a direction (no alignment): 2 mm from their mean
    offset = np.array([0.0012, -0.0016, 0.0])  # 2 mm long
    meshes = np.stack([template + offset, template + offset, template - offset])
    assert spread_mm(meshes, np.array([0, 0, 1]), align=False) == pytest.approx(2.0)
    # a person's photos are averaged first: their own scatter does not count
    scattered = np.stack([template + 3 * offset, template - offset, template - offset])
    assert spread_mm(scattered, np.array([0, 0, 1]), align=False) == pytest.approx(2.0)
    # sizes count: copies scaled by 1 +- 5 % about the centroid stay apart after rigid alignment
    centre = template.mean(axis=0)
    sized = np.stack([centre + (1 + k) * (template - centre) for k in (0.05, -0.05)])
    expected = 0.05 * np.linalg.norm(template - centre, axis=1).mean() * 1000
    assert spread_mm(sized, np.array([0, 1]), template) == pytest.approx(expected, rel=1e-6)
    assert math.isnan(spread_mm(sized, np.array([0, 0]), template))


def test_command_refuses_a_missing_folder(tmp_path):
    args = parser().parse_args(["evaluate-identity", "--people", str(tmp_path / "absent")])
    with pytest.raises(CLIError, match="not found"):
        args.func(args)


def test_end_to_end_on_three_lfw_people(tmp_path, capsys):
    pytest.importorskip("torch")
    if not LFW.is_dir():
        pytest.skip(f"{LFW} is missing: no real photos of people to evaluate")
    if not DEFAULT_MODEL.is_file() or not DEFAULT_DETECTOR.is_file():
        pytest.skip("the shipped model or detector is missing")
    people = tmp_path / "people"
    chosen = 0
    for folder in sorted(LFW.iterdir()):
        photos = sorted(folder.glob("*.jpg"))
        if len(photos) >= 2:
            (people / folder.name).mkdir(parents=True)
            for photo in photos[:3]:
                shutil.copyfile(photo, people / folder.name / photo.name)
            chosen += 1
        if chosen == 3:
            break
    (people / "Nobody").mkdir()  # no usable photo: skipped
    for name in ("broken.jpg", "empty.png"):
        (people / "Nobody" / name).write_bytes(b"not a photo")
    sheet = tmp_path / "sheet.png"
    args = parser().parse_args(["evaluate-identity", "--people", str(people), "--contact-sheet", str(sheet), "-q"])
    assert args.func(args) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    metrics = json.loads(lines[0])
    for key in KEYS:
        assert key in metrics and math.isfinite(metrics[key]), key
    assert metrics["people"] == 3 and metrics["people_skipped"] == 1 and metrics["photos"] >= 6
    assert metrics["photos_failed"] >= 2
    assert 0.0 <= metrics["auc_neutral"] <= 1.0 and metrics["spread_mm_neutral"] >= 0
    assert metrics["spread_mm_canonical"] > 0  # expressions differ at least
    assert metrics["different_pairs"] > metrics["same_pairs"] >= 3
    from PIL import Image

    with Image.open(sheet) as image:
        assert image.width == 5 * 256 and image.height >= 3 * 256
