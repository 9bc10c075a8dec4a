"""Calibrate the different-person threshold of several-photo fusion
(:data:`model.runtime.identity_fusion.DIFFERENT_PERSON_DISTANCE`) for an exported model.

On a folder of people (LFW layout), training split only (people whose folder is not in
`facerecon prepare`'s validation split: the validation people stay unseen by training and by this
calibration, for the tests and evaluate-identity), each person's first ``photos`` photos are
reconstructed and their identity codes weighed as the pipeline weighs them. The same-person
distances are each photo's distance to the weighted mean of the person's other photos
(:func:`~model.runtime.identity_fusion.leave_one_out_distances`); the different-person distances
are an intruder's distance to the weighted mean of another person's photos but one (the same
count of references). The threshold is the ``quantile`` of the same-person distances: that share
of a person's photos is kept when they are judged against their own others.

    python -m training.export.identity_consensus --people ../shared/data/train/lfw
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from model.runtime.detector import DEFAULT_DETECTOR, FaceDetector
from model.runtime.identity_fusion import identity_distance, leave_one_out_distances, view_weight
from model.runtime.image_io import load_rgb
from model.runtime.pipeline import FacePipeline, NoFaceFound
from model.runtime.reconstructor import DEFAULT_MODEL, FaceReconstructor
from training.data.prepare import is_validation
from training.evaluate_identity import verification_auc


def training_people(people_dir: Path, photos: int, *, val_fraction: float = 0.05, seed: int = 0) -> list[list[Path]]:
    """The first ``photos`` photos of each person with at least that many, training split only."""
    out = []
    for folder in sorted(p for p in people_dir.iterdir() if p.is_dir()):
        if is_validation(f"{people_dir.name}/{folder.name}", val_fraction, seed):
            continue
        paths = sorted(folder.glob("*.jpg"))
        if len(paths) >= photos:
            out.append(paths[:photos])
    return out


def encode_person(pipeline: FacePipeline, paths: list[Path]) -> tuple[np.ndarray, np.ndarray] | None:
    """Identity codes (K, Di) and view weights (K,) of a person's photos; None when one has no face."""
    codes, weights = [], []
    for path in paths:
        try:
            (face,) = pipeline.reconstruct(load_rgb(path.read_bytes())).faces
        except NoFaceFound:
            return None
        result = face.result
        codes.append(result.codes.identity)
        size = pipeline.reconstructor.input_size
        weights.append(view_weight(face.score, float(result.euler_degrees[0]), face.box, size))
    return np.stack(codes), np.array(weights)


def summary(values: np.ndarray) -> dict[str, float]:
    return {"n": int(len(values)), "mean": round(float(values.mean()), 4), "std": round(float(values.std()), 4),
            **{f"p{q}": round(float(np.percentile(values, q)), 4) for q in (5, 25, 50, 75, 95)}}


def calibrate(people_dir: Path, pipeline: FacePipeline, *, people: int, photos: int, quantile: float,
              seed: int = 0) -> dict:
    """Same- and different-person distance distributions and the threshold (see the module)."""
    encoded = [e for e in (encode_person(pipeline, paths) for paths in training_people(people_dir, photos)[:people])
               if e is not None]
    same = np.concatenate([leave_one_out_distances(codes, weights) for codes, weights in encoded])
    rng = np.random.default_rng(seed)
    different = []
    for index, (codes, weights) in enumerate(encoded):
        others = [k for k in range(len(encoded)) if k != index]
        for other in rng.choice(others, size=photos, replace=False):
            intruder = encoded[other][0][rng.integers(photos)]
            keep = np.delete(np.arange(photos), rng.integers(photos))  # as many references as a same-person photo has
            reference = (weights[keep, None] * codes[keep]).sum(axis=0) / weights[keep].sum()
            different.append(identity_distance(intruder, reference))
    different_array = np.array(different)
    threshold = float(np.quantile(same, quantile))
    scores = -np.concatenate([same, different_array])
    labels = np.concatenate([np.ones(len(same), bool), np.zeros(len(different_array), bool)])
    return {"people": len(encoded), "photos_per_person": photos, "same_person": summary(same),
            "different_person": summary(different_array), "auc": round(verification_auc(scores, labels), 4),
            "quantile": quantile, "threshold": round(threshold, 4),
            "same_rejected": round(float((same > threshold).mean()), 4),
            "different_accepted": round(float((different_array <= threshold).mean()), 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--people", type=Path, required=True, help="LFW layout: DIR/<Person_Name>/*.jpg")
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--max-people", type=int, default=120, help="training-split people used (name order)")
    parser.add_argument("--photos", type=int, default=4, help="photos per person (people with fewer are skipped)")
    parser.add_argument("--quantile", type=float, default=0.95, help="share of same-person photos kept")
    args = parser.parse_args()
    pipeline = FacePipeline(FaceReconstructor(args.model), FaceDetector(DEFAULT_DETECTOR))
    print(json.dumps(calibrate(args.people, pipeline, people=args.max_people, photos=args.photos,
                               quantile=args.quantile)))


if __name__ == "__main__":
    main()
