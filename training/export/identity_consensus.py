"""Calibrate the different-person threshold of several-photo fusion
(:mod:`model.runtime.identity_fusion`) for an exported model, and write it into the model's
metadata (:attr:`model.onnx_contract.ModelMetadata.identity_threshold`): `facerecon
calibrate-identity`. The threshold is tied to the weights: recalibrate whenever they change.

On a folder of people (LFW layout), training split only (people whose folder is not in
`facerecon prepare`'s validation split: the validation people stay unseen by training and by this
calibration, for the tests and evaluate-identity), each person's first ``photos`` photos are
reconstructed and their identity codes weighed as the pipeline weighs them. The same-person
distances are each photo's distance to the weighted mean of the person's other photos
(:func:`~model.runtime.identity_fusion.leave_one_out_distances`); the different-person distances
are an intruder's distance to the weighted mean of another person's photos but one (the same
count of references). The threshold is the ``quantile`` of the same-person distances: that share
of a person's photos is kept when they are judged against their own others.

    facerecon calibrate-identity --people ../shared/data/train/lfw --out model/weights/facerecon.onnx
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx

from model.runtime.identity_fusion import identity_distance, leave_one_out_distances, view_weight
from model.runtime.image_io import load_rgb
from model.runtime.pipeline import FacePipeline, NoFaceFound
from training.data.prepare import is_validation
from training.evaluate_identity import verification_auc
from training.export.onnx_graph import replace_model_metadata


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
    if len(encoded) <= photos:  # each person's intruders are ``photos`` other people
        raise ValueError(f"{len(encoded)} training-split people in {people_dir} have {photos} photos with a face "
                         f"each; the calibration needs at least {photos + 1}")
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
    threshold = round(float(np.quantile(same, quantile)), 4)  # as written into the model
    scores = -np.concatenate([same, different_array])
    labels = np.concatenate([np.ones(len(same), bool), np.zeros(len(different_array), bool)])
    return {"people": len(encoded), "photos_per_person": photos, "same_person": summary(same),
            "different_person": summary(different_array), "auc": round(verification_auc(scores, labels), 4),
            "quantile": quantile, "threshold": threshold,
            "same_rejected": round(float((same > threshold).mean()), 4),
            "different_accepted": round(float((different_array <= threshold).mean()), 4)}


def write_identity_threshold(model_path: Path, threshold: float, out: Path) -> None:
    """Copy the model at ``model_path`` to ``out`` (which may be ``model_path``) with ``threshold``
    as its metadata's ``identity_threshold``."""
    graph = onnx.load(str(model_path))
    replace_model_metadata(graph, identity_threshold=threshold)
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(graph, str(out))
