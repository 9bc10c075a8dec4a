import numpy as np
import torch

from training.data.identity_sampling import IdentityPairStream, person_ids


def test_person_ids_come_from_the_person_folders():
    names = ["lfw/Ann/1.jpg", "lfw/Bob/1.jpg", "lfw/Ann/2.jpg", "utkface/30_1_0.jpg", "lfw/Bob/2.jpg"]
    person = person_ids(names)
    assert person[0] == person[2] and person[1] == person[4] and person[0] != person[1]
    assert person[3] == -1


def test_every_batch_opens_with_same_person_pairs_of_different_people():
    rng = np.random.default_rng(0)
    person = np.concatenate([np.repeat(np.arange(10), 3), -np.ones(50, dtype=np.int64)])
    rng.shuffle(person)
    stream = IdentityPairStream(person, np.ones(len(person)), batch_size=8, pairs=3, num_batches=20,
                                generator=torch.Generator().manual_seed(0))
    indices = np.array(list(stream)).reshape(20, 8)
    for batch in indices:
        pairs = person[batch[:6]].reshape(3, 2)
        assert (pairs[:, 0] == pairs[:, 1]).all() and (pairs[:, 0] >= 0).all()
        assert len(set(pairs[:, 0])) == 3  # three different people
        assert (batch[0:6:2] != batch[1:6:2]).all()  # two different photos of each


def test_look_alike_batches_hold_people_whose_embeddings_are_near():
    """Ten people in two groups far apart in the teacher's space: with each person's four nearest as
    look-alikes, every batch's three pairs are of three different people of one group."""
    rng = np.random.default_rng(1)
    person = np.concatenate([np.repeat(np.arange(10), 3), -np.ones(20, dtype=np.int64)])
    centres = np.where(np.arange(10)[:, None] < 5, 1.0, -1.0) * np.eye(8)[0] + 0.01 * rng.normal(size=(10, 8))
    embedding = np.where(person[:, None] >= 0, centres[person] + 0.001 * rng.normal(size=(len(person), 8)), 0.0)
    stream = IdentityPairStream(person, np.ones(len(person)), batch_size=8, pairs=3, num_batches=50,
                                generator=torch.Generator().manual_seed(0), embedding=embedding, look_alikes=4)
    for batch in np.array(list(stream)).reshape(50, 8):
        people = person[batch[:6:2]]
        assert (person[batch[1:6:2]] == people).all() and len(set(people)) == 3
        assert len({p < 5 for p in people}) == 1  # one group
