"""Several photos' identity codes: weights by how well each saw the face, the odd one out rejected."""

import math

import numpy as np
import pytest

from model.runtime.identity_fusion import MIN_FRONTALITY, consensus, fuse_identity, view_weight

THRESHOLD = 17.2  # a different-person distance as a model's metadata carries it


def test_frontal_large_confident_faces_weigh_most():
    assert view_weight(1.0, 0.0, (0, 0, 200, 200), 128) == 1.0
    assert view_weight(None, 0.0, (0, 0, 200, 200), 128) == 1.0  # a box the caller gave
    assert view_weight(0.8, 0.0, (0, 0, 64, 60), 128) == 0.8 * 0.5
    assert math.isclose(view_weight(1.0, 60.0, (0, 0, 200, 200), 128), 0.5)
    assert view_weight(1.0, 90.0, (0, 0, 200, 200), 128) == MIN_FRONTALITY


def _people(rng, count: int, centre: np.ndarray) -> np.ndarray:
    return centre + rng.normal(0.0, 1.0, (count, 128)) * 0.3  # about 3.4 apart: well within the threshold


def test_the_photo_of_another_person_is_rejected_and_the_rest_kept():
    rng = np.random.default_rng(0)
    person, other = rng.normal(0.0, 1.5, 128), rng.normal(0.0, 1.5, 128)
    codes = np.concatenate([_people(rng, 4, person), other[None]])
    weights = np.array([1.0, 0.5, 0.8, 0.9, 1.0])
    accepted, distances = consensus(codes, weights, THRESHOLD)
    assert accepted.tolist() == [True, True, True, True, False]
    assert distances[4] > THRESHOLD > distances[:4].max()
    fused = fuse_identity(codes[accepted], weights[accepted])
    np.testing.assert_allclose(fused, (weights[:4, None] * codes[:4]).sum(axis=0) / weights[:4].sum(), rtol=1e-5)


def test_two_photos_that_disagree_keep_the_better_seen_one():
    rng = np.random.default_rng(1)
    codes = rng.normal(0.0, 3.0, (2, 128))
    accepted, _ = consensus(codes, np.array([0.3, 0.9]), THRESHOLD)
    assert accepted.tolist() == [False, True]


def test_a_lone_photo_is_kept_without_a_distance():
    accepted, distances = consensus(np.ones((1, 128)), np.ones(1), THRESHOLD)
    assert accepted.tolist() == [True] and math.isnan(distances[0])


@pytest.mark.parametrize("threshold", [0.0, -1.0, math.inf])
def test_a_model_without_a_threshold_rejects_no_photo(threshold):
    rng = np.random.default_rng(0)
    person, other = rng.normal(0.0, 1.5, 128), rng.normal(0.0, 1.5, 128)
    codes = np.concatenate([_people(rng, 4, person), other[None]])
    weights = np.ones(5)
    accepted, distances = consensus(codes, weights, threshold)
    assert accepted.all()
    np.testing.assert_allclose(distances, consensus(codes, weights, 1e9)[1])  # each photo's distance, one round
    assert distances[4] > THRESHOLD  # the photo a calibrated model rejects
    assert not consensus(codes, weights, THRESHOLD)[0][4]
