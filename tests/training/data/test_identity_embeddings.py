import numpy as np
import pytest

pytest.importorskip("dlib", reason="the face-recognition teacher needs the teacher extra (dlib)")

from training.data.identity_embeddings import EMBEDDINGS_FILE, embed_prepared, load_embeddings  # noqa: E402
from training.data.shards import read_shard, write_shard  # noqa: E402


def write_named_shard(synthetic_data, folder):
    """Ten samples, the first six in three person folders, the rest unlabelled; returns the names."""
    shard = read_shard(synthetic_data / "shard_00000.npz")
    names = [f"lfw/person_{i % 3}/{i}.jpg" if i < 6 else f"utkface/{i}.jpg" for i in range(10)]
    samples = [{"jpeg": shard["jpeg"][shard["offsets"][i]: shard["offsets"][i + 1]], "landmarks": shard["landmarks"][i],
                "valid": shard["valid"][i]} for i in range(10)]
    write_shard(folder / "shard_00000.npz", samples, names, [False] * 10)
    return names


def test_embeddings_of_the_photos_in_person_folders(synthetic_data, tmp_path):
    names = write_named_shard(synthetic_data, tmp_path)
    assert embed_prepared(tmp_path, batch_size=4, workers=1) == {"embedded": 6}
    assert (tmp_path / EMBEDDINGS_FILE).is_file()
    embeddings = load_embeddings(tmp_path)
    assert sorted(embeddings) == sorted(names[:6])
    vectors = np.stack(list(embeddings.values()))
    assert vectors.shape == (6, 128) and np.isfinite(vectors).all() and (np.linalg.norm(vectors, axis=1) > 0.1).all()


def test_embeddings_of_all_photos(synthetic_data, tmp_path):
    names = write_named_shard(synthetic_data, tmp_path)
    assert embed_prepared(tmp_path, batch_size=4, workers=1, all_photos=True) == {"embedded": 10}
    embeddings = load_embeddings(tmp_path)
    assert sorted(embeddings) == sorted(names)
    assert np.stack(list(embeddings.values())).std(axis=0).mean() > 0  # not one vector for every photo
