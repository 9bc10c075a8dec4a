"""Face-recognition embeddings of the prepared photos: a training-time teacher for the identity branch.

``facerecon embed-identities --data DATA`` writes ``DATA/identity_embeddings.npz``: for every
sample of the prepared shards whose source is in a person's folder (LFW's layout), or with
``--all-photos`` for every sample (unlabelled photos too: more faces for the teacher's relations
between people, which need no identity label), dlib's 128-D
face descriptor (the ResNet of PyPI's ``face-recognition-models``, public domain, trained on
people chosen to avoid LFW) of its crop, aligned by the project's own MediaPipe labels (the eye
corners and the base of the nose, the five points of dlib's face chips). The trainer reads it as
a per-sample target (``identity.teacher``); nothing of it is used at serving time. dlib's
68-point shape predictor, in the same package, is non-commercial and is never loaded.

Needs the ``teacher`` extra (dlib builds from source: several minutes).
"""

from __future__ import annotations

import importlib.util
import logging
import multiprocessing
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


def recognition_weights() -> Path:
    """Path of the ResNet's weights in the installed ``face-recognition-models`` (found without
    importing the package, whose ``__init__`` needs setuptools' retired ``pkg_resources``)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("face-recognition-models is not installed")
    path = Path(list(spec.submodule_search_locations)[0]) / "models" / "dlib_face_recognition_resnet_model_v1.dat"
    if not path.is_file():
        raise ImportError(f"face-recognition-models has no {path.name}")
    return path


def _has_person(name: str) -> bool:
    return name.count("/") >= 2


def embed_shard(path: Path, batch_size: int = 32, all_photos: bool = False) -> tuple[list[str], np.ndarray]:
    """Names and embeddings (N, 128) of one shard's samples that lie in a person's folder (every
    sample with ``all_photos``)."""
    import dlib

    recogniser = dlib.face_recognition_model_v1(str(recognition_weights()))
    shard = read_shard(path, ("jpeg", "offsets", "landmarks", "names"))
    rows = [i for i, name in enumerate(shard["names"].tolist()) if all_photos or _has_person(name)]
    names: list[str] = []
    vectors = [np.zeros((0, EMBEDDING_DIM), np.float32)]
    for start in range(0, len(rows), batch_size):
        chips = []
        for row in rows[start : start + batch_size]:
            crop = decode_jpeg(shard["jpeg"], shard["offsets"], row)
            points = shard["landmarks"][row][list(CHIP_POINTS), :2]
            box = dlib.rectangle(0, 0, crop.shape[1] - 1, crop.shape[0] - 1)
            parts = [dlib.point(int(round(x)), int(round(y))) for x, y in points]
            chips.append(dlib.get_face_chip(crop, dlib.full_object_detection(box, parts), size=CHIP_SIZE,
                                            padding=CHIP_PADDING))
            names.append(str(shard["names"][row]))
        vectors.append(np.asarray(recogniser.compute_face_descriptor(chips), dtype=np.float32))
    return names, np.concatenate(vectors)


def _embed_task(args: tuple[Path, int, bool]) -> tuple[list[str], np.ndarray]:
    return embed_shard(*args)


def embed_prepared(data: Path, batch_size: int = 32, workers: int = 2, all_photos: bool = False) -> dict[str, int]:
    """Write ``data/identity_embeddings.npz`` (``names`` (N,) str, ``embeddings`` (N, 128) float32)
    for the samples of ``data``'s shards that lie in a person's folder (every sample with
    ``all_photos``); returns counts."""
    import dlib  # noqa: F401  # fail here, before any work, when the teacher extra is missing

    recognition_weights()
    paths = shard_paths(data)
    if not paths:
        raise FileNotFoundError(f"no prepared shards in {data}: run `facerecon prepare` first")
    names: list[str] = []
    vectors = [np.zeros((0, EMBEDDING_DIM), np.float32)]
    context = multiprocessing.get_context("spawn")
    with context.Pool(workers) as pool:
        tasks = [(p, batch_size, all_photos) for p in paths]
        for shard_names, shard_vectors in tqdm(pool.imap(_embed_task, tasks), total=len(paths), desc="embed",
                                               unit="shard"):
            names += shard_names
            vectors.append(shard_vectors)
    tmp = data / (EMBEDDINGS_FILE + ".tmp.npz")
    np.savez(tmp, names=np.array(names, dtype=str), embeddings=np.concatenate(vectors))
    tmp.replace(data / EMBEDDINGS_FILE)
    return {"embedded": len(names)}


def load_embeddings(data: Path) -> dict[str, np.ndarray]:
    """The embeddings of ``data`` by sample name (empty when the folder has none)."""
    path = data / EMBEDDINGS_FILE
    if not path.is_file():
        return {}
    with np.load(path) as stored:
        return dict(zip(stored["names"].tolist(), stored["embeddings"]))
