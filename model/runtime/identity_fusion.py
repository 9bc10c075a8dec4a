"""One identity from several photos of a person: how much each photo counts, which photos show
someone else, and the fused identity code. numpy only.

Weights: a photo counts by how well it saw the face, ``score * cos(yaw) * min(1, side / S)``:
the detector's confidence (1 for a face box the caller gave), how frontal the face is (a profile
hides half of it; cos(yaw) is floored at MIN_FRONTALITY so a profile still counts a little), and
how many pixels the face had (the face box's longer side against the network's input side S: a
face smaller than the crop is blown up, and its detail is invented).

Consensus: the distance of a photo's identity code to the weighted mean of the other accepted
photos' codes. The photo that disagrees most is rejected while that distance exceeds
:data:`DIFFERENT_PERSON_DISTANCE`, then the others are compared again without it; with two photos
left that disagree, the better-seen one stays (nothing says which is the odd one out).
"""

from __future__ import annotations

import math

import numpy as np

from model.conventions import Box

MIN_FRONTALITY = 0.1  # cos(yaw) floor: a face seen from the side still counts a little

# Distance ||a - m|| of a photo's identity code a to the weighted mean m of the other photos'
# codes beyond which the photo is taken for another person: the 95th percentile of the same-person
# distances, calibrated for the shipped model (29900 steps; recalibrate when the weights change)
# with `python -m training.export.identity_consensus --people ../shared/data/train/lfw
# --max-people 150` on LFW's training split only (people not in `facerecon prepare`'s validation
# split, seed 0, fraction 0.05; the validation people are the tests'), 149 people with 4 photos:
#   same person (a photo against its person's 3 others): mean 9.89, sd 3.96, median 9.49,
#     5-95 % 4.34-17.23 (596 photos);
#   different person (another person's photo against 3 of a person's): mean 13.05, sd 4.52,
#     median 12.62, 5-95 % 6.46-21.06 (596 intruders); AUC 0.70.
# At 17.2, 5 % of a person's own photos are rejected and 82 % of intruders are let through: the
# shipped identity codes separate people weakly (the model card's identity AUC, issue 14), so only
# clear outliers are caught; a lower threshold would reject many of the person's own photos.
DIFFERENT_PERSON_DISTANCE = 17.2


def view_weight(score: float | None, yaw_degrees: float, box: Box, input_size: int) -> float:
    """How well a photo saw its face (see the module): in (0, 1]."""
    frontality = max(math.cos(math.radians(yaw_degrees)), MIN_FRONTALITY)
    side = max(box[2] - box[0], box[3] - box[1])
    return (1.0 if score is None else float(score)) * frontality * min(1.0, side / input_size)


def identity_distance(code: np.ndarray, reference: np.ndarray) -> float:
    """Euclidean distance of an identity code (Di,) to a reference code (Di,). (Separated same from
    different people best of the plain measures tried on the calibration people: AUC 0.71, against
    0.68 for the distance relative to the reference's norm and for the cosine distance.)"""
    return float(np.linalg.norm(code - reference))


def leave_one_out_distances(codes: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(K,) each code's distance (:func:`identity_distance`) to the weighted mean of the other K - 1
    codes (K, Di) with weights (K,); needs K >= 2."""
    total = weights[:, None] * codes
    distances = []
    for k in range(len(codes)):
        rest = np.delete(np.arange(len(codes)), k)
        reference = total[rest].sum(axis=0) / weights[rest].sum()
        distances.append(identity_distance(codes[k], reference))
    return np.array(distances)


def consensus(codes: np.ndarray, weights: np.ndarray, threshold: float = DIFFERENT_PERSON_DISTANCE
              ) -> tuple[np.ndarray, np.ndarray]:
    """Which photos show the same person: codes (K, Di), weights (K,) -> (accepted (K,) bool,
    distance (K,) of each photo to the others at the round it was judged: the last round's for
    the accepted ones, the round it was rejected in for the others; NaN for a lone photo)."""
    accepted = np.ones(len(codes), bool)
    distances = np.full(len(codes), np.nan)
    while accepted.sum() >= 2:
        kept = np.flatnonzero(accepted)
        round_distances = leave_one_out_distances(codes[kept], weights[kept])
        distances[kept] = round_distances
        if round_distances.max() <= threshold:
            break
        if len(kept) == 2:  # they disagree: keep the better-seen photo
            worst = kept[int(np.argmin(weights[kept]))]
        else:
            worst = kept[int(np.argmax(round_distances))]
        accepted[worst] = False
    return accepted, distances


def fuse_identity(codes: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The weighted mean (Di,) of identity codes (K, Di) with weights (K,)."""
    return ((weights[:, None] * codes).sum(axis=0) / weights.sum()).astype(np.float32)
