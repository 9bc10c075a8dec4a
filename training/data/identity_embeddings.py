"""Face-recognition embeddings of the prepared photos: a training-time teacher for the identity branch.

``facerecon embed-identities --data DATA`` writes ``DATA/identity_embeddings.npz``: for every
sample of the prepared shards whose source is in a person's folder (LFW's layout), dlib's 128-D
face descriptor (the ResNet of PyPI's ``face-recognition-models``, public domain, trained on
people chosen to avoid LFW) of its crop, aligned by the project's own MediaPipe labels (the eye
corners and the base of the nose, the five points of dlib's face chips). The trainer reads it as
a per-sample target (``identity.teacher``); nothing of it is used at serving time. dlib's
68-point shape predictor, in the same package, is non-commercial and is never loaded.

Needs the ``teacher`` extra (dlib builds from source: several minutes).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from tqdm import tqdm

from training.data.shards import decode_jpeg, read_shard, shard_paths

log = logging.getLogger(__name__)

EMBEDDINGS_FILE = "identity_embeddings.npz"
EMBEDDING_DIM = 128
# MediaPipe base vertices in the order of dlib's five-point face chips: the subject's left eye
# outer and inner corners, the right eye outer and inner corners, the base of the nose.
CHIP_POINTS = (263, 362, 33, 133, 2)
CHIP_SIZE, CHIP_PADDING = 150, 0.25


def _has_person(name: str) -> bool:
    return name.count("/") >= 2


def embed_prepared(data: Path, batch_size: int = 32) -> dict[str, int]:
    """Write ``data/identity_embeddings.npz`` (``names`` (N,) str, ``embeddings`` (N, 128) float32)
    for the samples of ``data``'s shards that lie in a person's folder; returns counts."""
    import dlib
    import face_recognition_models

    recogniser = dlib.face_recognition_model_v1(face_recognition_models.face_recognition_model_location())
    paths = shard_paths(data)
    if not paths:
        raise FileNotFoundError(f"no prepared shards in {data}: run `facerecon prepare` first")
    names_out: list[str] = []
    vectors: list[np.ndarray] = []
    total = 0
    for path in tqdm(paths, desc="embed", unit="shard"):
        shard = read_shard(path, ("jpeg", "offsets", "landmarks", "names"))
        rows = [i for i, name in enumerate(shard["names"].tolist()) if _has_person(name)]
        total += len(shard["names"])
        for start in range(0, len(rows), batch_size):
            chips, batch_names = [], []
            for row in rows[start : start + batch_size]:
                crop = decode_jpeg(shard["jpeg"], shard["offsets"], row)
                points = shard["landmarks"][row][list(CHIP_POINTS), :2]
                box = dlib.rectangle(0, 0, crop.shape[1] - 1, crop.shape[0] - 1)
                parts = [dlib.point(int(round(x)), int(round(y))) for x, y in points]
                detection = dlib.full_object_detection(box, parts)
                chips.append(dlib.get_face_chip(crop, detection, size=CHIP_SIZE, padding=CHIP_PADDING))
                batch_names.append(str(shard["names"][row]))
            if chips:
                vectors.append(np.asarray(recogniser.compute_face_descriptor(chips), dtype=np.float32))
                names_out += batch_names
    embeddings = np.concatenate(vectors) if vectors else np.zeros((0, EMBEDDING_DIM), np.float32)
    tmp = data / (EMBEDDINGS_FILE + ".tmp.npz")
    np.savez(tmp, names=np.array(names_out, dtype=str), embeddings=embeddings)
    tmp.replace(data / EMBEDDINGS_FILE)
    return {"samples": total, "embedded": len(names_out)}


def load_embeddings(data: Path) -> dict[str, np.ndarray]:
    """The embeddings of ``data`` by sample name (empty when the folder has none)."""
    path = data / EMBEDDINGS_FILE
    if not path.is_file():
        return {}
    with np.load(path) as stored:
        return dict(zip(stored["names"].tolist(), stored["embeddings"]))
