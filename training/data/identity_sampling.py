"""Batches that hold several photos of one person, for the identity terms (:mod:`training.identity_losses`).

Photos in a person's folder (LFW's layout, ``lfw/<Person>/<photo>``) share a person id; other photos
have none (-1). :class:`IdentityPairStream` lays out every batch as ``pairs`` same-person pairs
(partners adjacent, each pair a different person) followed by faces drawn by the base weights.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Sampler


@dataclass(frozen=True)
class IdentitySamplingConfig:
    """How many same-person pairs open each training batch (0: no identity terms), and whether their
    people look alike: with ``look_alikes`` K > 0, one person is drawn uniformly and the others among
    the K people nearest to them by the face-recognition teacher's mean embedding (hard negatives for
    the separation and teacher terms; needs ``facerecon embed-identities``)."""

    pairs_per_batch: int = 0
    look_alikes: int = 0


def person_ids(names: Sequence[str]) -> np.ndarray:
    """(N,) int64 person id of each sample from its source name (``root/person/photo`` -> the
    person's folder), -1 for a photo directly under its root."""
    keys = ["/".join(name.split("/")[:2]) if name.count("/") >= 2 else "" for name in names]
    lookup: dict[str, int] = {}
    return np.array([-1 if not key else lookup.setdefault(key, len(lookup)) for key in keys], dtype=np.int64)


class IdentityPairStream(Sampler[int]):
    """An endless stream of batch-ordered indices: each run of ``batch_size`` starts with
    ``pairs`` same-person pairs of distinct people (drawn uniformly over the people with at
    least two photos), then ``batch_size - 2 * pairs`` indices drawn by ``weights`` (N,).

    ``embedding`` (N, E) the teacher's embeddings (zeros where none) and ``look_alikes`` K > 0: the
    first pair's person is drawn uniformly, the others among that person's K nearest people (by
    the mean of their photos' embeddings; people without embeddings are never anyone's nearest)."""

    def __init__(self, person: np.ndarray, weights: np.ndarray, batch_size: int, pairs: int,
                 num_batches: int, generator: torch.Generator, embedding: np.ndarray | None = None,
                 look_alikes: int = 0) -> None:
        if 2 * pairs > batch_size:
            raise ValueError(f"{pairs} pairs do not fit a batch of {batch_size}")
        people, counts = np.unique(person[person >= 0], return_counts=True)
        self.people = people[counts >= 2]
        if pairs and len(self.people) < pairs:
            raise ValueError(f"{pairs} pairs per batch need {pairs} people with two photos; the data has "
                             f"{len(self.people)}")
        order = np.argsort(person, kind="stable")
        starts = np.searchsorted(person[order], self.people)
        self.members = [order[s : s + c] for s, c in zip(starts, counts[counts >= 2])]
        self.weights = torch.as_tensor(weights, dtype=torch.float64)
        self.batch_size, self.pairs, self.num_batches = batch_size, pairs, num_batches
        self.generator = generator
        self.neighbours = None if not look_alikes else self._nearest_people(embedding, look_alikes)

    def _nearest_people(self, embedding: np.ndarray | None, k: int) -> np.ndarray:
        """(P, k) indices into ``self.people`` of each person's k nearest others by mean embedding."""
        if embedding is None or k < self.pairs - 1 or k >= len(self.people):
            raise ValueError(f"look_alikes={k} needs the teacher's embeddings and pairs - 1 <= k < "
                             f"{len(self.people)} people")
        means = np.stack([embedding[m].mean(axis=0) for m in self.members]).astype(np.float32)
        known = np.abs(means).sum(axis=1) > 0
        squared = (means**2).sum(axis=1)
        neighbours = np.empty((len(means), k), np.int64)
        for start in range(0, len(means), 1024):  # (1024, P) distances at a time: bounded memory
            block = squared[start : start + 1024, None] + squared[None] - 2 * means[start : start + 1024] @ means.T
            block[:, ~known] = np.inf
            block[np.arange(len(block)), np.arange(start, start + len(block))] = np.inf  # not oneself
            neighbours[start : start + 1024] = np.argpartition(block, k, axis=1)[:, :k]
        return neighbours

    def _batch_people(self) -> list[int]:
        if self.neighbours is None:
            return torch.randperm(len(self.people), generator=self.generator)[: self.pairs].tolist()
        anchor = int(torch.randint(len(self.people), (1,), generator=self.generator))
        near = self.neighbours[anchor]
        others = torch.randperm(len(near), generator=self.generator)[: self.pairs - 1].tolist()
        return [anchor, *(int(near[i]) for i in others)]

    def __len__(self) -> int:
        return self.num_batches * self.batch_size

    def __iter__(self) -> Iterator[int]:
        rest = self.batch_size - 2 * self.pairs
        for _ in range(self.num_batches):
            for k in self._batch_people():
                members = self.members[k]
                two = torch.randperm(len(members), generator=self.generator)[:2].tolist()
                yield from (int(members[i]) for i in two)
            if rest:
                yield from torch.multinomial(self.weights, rest, replacement=True, generator=self.generator).tolist()
