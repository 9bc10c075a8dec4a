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
    """How many same-person pairs open each training batch (0: no identity terms)."""

    pairs_per_batch: int = 0


def person_ids(names: Sequence[str]) -> np.ndarray:
    """(N,) int64 person id of each sample from its source name (``root/person/photo`` -> the
    person's folder), -1 for a photo directly under its root."""
    keys = ["/".join(name.split("/")[:2]) if name.count("/") >= 2 else "" for name in names]
    lookup: dict[str, int] = {}
    return np.array([-1 if not key else lookup.setdefault(key, len(lookup)) for key in keys], dtype=np.int64)


class IdentityPairStream(Sampler[int]):
    """An endless stream of batch-ordered indices: each run of ``batch_size`` starts with
    ``pairs`` same-person pairs of distinct people (drawn uniformly over the people with at
    least two photos), then ``batch_size - 2 * pairs`` indices drawn by ``weights`` (N,)."""

    def __init__(self, person: np.ndarray, weights: np.ndarray, batch_size: int, pairs: int,
                 num_batches: int, generator: torch.Generator) -> None:
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

    def __len__(self) -> int:
        return self.num_batches * self.batch_size

    def __iter__(self) -> Iterator[int]:
        rest = self.batch_size - 2 * self.pairs
        for _ in range(self.num_batches):
            chosen = torch.randperm(len(self.people), generator=self.generator)[: self.pairs].tolist()
            for k in chosen:
                members = self.members[k]
                two = torch.randperm(len(members), generator=self.generator)[:2].tolist()
                yield from (int(members[i]) for i in two)
            if rest:
                yield from torch.multinomial(self.weights, rest, replacement=True, generator=self.generator).tolist()
