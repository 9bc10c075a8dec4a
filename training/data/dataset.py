"""Prepared face crops (see :mod:`training.data.prepare`) as a torch Dataset with augmentation."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from model.topology import NUM_BASE_VERTICES, FaceTopology
from training.data.augment import AugmentConfig, augment
from training.data.identity_embeddings import EMBEDDING_DIM, load_embeddings
from training.data.identity_sampling import person_ids
from training.data.pose_sampling import estimate_yaw
from training.data.shards import decode_jpeg, read_shard, shard_paths
from training.tools.topology_builder import IBUG68_FROM_MEDIAPIPE


@dataclass
class _Shard:
    jpeg: np.ndarray
    offsets: np.ndarray


class PreparedFaces(Dataset):
    """Samples of one split (``train`` or ``val``) of one or more prepared data folders.

    Items: ``image`` (3, S, S) float in [0, 1], ``landmarks`` (468, 2) crop pixels,
    ``photo_mask`` (S, S) float (1 where the real, unoccluded photo shows), ``person`` () long,
    ``embedding`` (128,) float: the face-recognition teacher's embedding where the data folder has
    one for the sample (:mod:`training.data.identity_embeddings`), else zeros.
    ``yaw`` (N,) holds each sample's yaw in degrees: stored in the shard (``facerecon
    synthesize``), else estimated from its landmarks; ``person`` (N,) each sample's person id
    (-1 where the photo is not in a person's folder; see :mod:`training.data.identity_sampling`),
    and -1 for a synthesised view too (a shard with stored yaws): it re-renders the model's own
    reconstruction of one photo, so pairing it with that photo or the person's others would teach
    the identity terms the old model's shape, not the person's.
    """

    def __init__(self, root: str | Path | Sequence[str | Path], split: str, topology: FaceTopology,
                 config: AugmentConfig, seed: int = 0, limit: int | None = None) -> None:
        roots = [Path(root)] if isinstance(root, (str, Path)) else [Path(r) for r in root]
        paths = [p for r in roots for p in shard_paths(r)]
        if not paths:
            folders = ", ".join(map(str, roots))
            raise FileNotFoundError(f"no prepared shards in {folders}: run `facerecon prepare` first")
        if split not in ("train", "val"):
            raise ValueError(f"split must be train or val, not {split!r}")
        self.shards: list[_Shard] = []
        template = topology.vertices[:NUM_BASE_VERTICES]
        index, landmarks, valid, yaw, names, embeddings, synthesised = [], [], [], [], [], [], []
        teachers = {r: load_embeddings(r) for r in roots}
        for shard_id, path in enumerate(paths):
            data = read_shard(path, ("jpeg", "offsets", "landmarks", "valid", "is_val", "yaw", "names"))
            keep = np.flatnonzero(data["is_val"] == (split == "val"))
            self.shards.append(_Shard(jpeg=data["jpeg"], offsets=data["offsets"]))
            index.append(np.stack([np.full(len(keep), shard_id), keep], axis=1))
            landmarks.append(data["landmarks"][keep])
            valid.append(data["valid"][keep])
            yaw.append(data["yaw"][keep] if "yaw" in data else estimate_yaw(landmarks[-1], template))
            synthesised.append(np.full(len(keep), "yaw" in data))
            kept_names = data["names"][keep].tolist()
            names += kept_names
            teacher = teachers[path.parent]
            embeddings.append(np.stack([teacher.get(n, np.zeros(EMBEDDING_DIM, np.float32)) for n in kept_names])
                              if kept_names else np.zeros((0, EMBEDDING_DIM), np.float32))
        self.index = np.concatenate(index)
        self.person = np.where(np.concatenate(synthesised), -1, person_ids(names))
        self.embedding = np.concatenate(embeddings).astype(np.float32)
        self.landmarks = np.concatenate(landmarks)
        self.valid = np.concatenate(valid)
        self.yaw = np.concatenate(yaw)
        if limit is not None:
            self.index, self.landmarks, self.valid = self.index[:limit], self.landmarks[:limit], self.valid[:limit]
            self.yaw, self.person, self.embedding = self.yaw[:limit], self.person[:limit], self.embedding[:limit]
        self.train = split == "train"
        self.config = config
        self.seed = seed
        self.mirror = topology.mirror[:NUM_BASE_VERTICES]
        self.face_box_indices = IBUG68_FROM_MEDIAPIPE

    def __len__(self) -> int:
        return len(self.index)

    def stored_image(self, i: int) -> np.ndarray:
        shard_id, row = self.index[i]
        shard = self.shards[shard_id]
        return decode_jpeg(shard.jpeg, shard.offsets, row)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        # Training draws fresh augmentation from torch's per-worker generator (seeded by the
        # DataLoader), so repeats of a sample differ; validation crops are fixed.
        rng = np.random.default_rng((self.seed, int(torch.randint(2**62, ())) if self.train else 0, int(i)))
        sample = augment(self.stored_image(i), self.landmarks[i], self.valid[i], self.mirror,
                         self.face_box_indices, rng, self.config, train=self.train)
        return {
            "image": torch.from_numpy(sample.image).permute(2, 0, 1).float() / 255.0,
            "landmarks": torch.from_numpy(sample.landmarks),
            "photo_mask": torch.from_numpy(sample.photo_mask.astype(np.float32)),
            "person": torch.tensor(int(self.person[i])),
            "embedding": torch.from_numpy(self.embedding[i]),
        }
