"""A tiny prepared dataset made of rendered template faces (no ../shared needed)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

torch = pytest.importorskip("torch")


def render_synthetic_faces(topology, count: int, size: int = 192, seed: int = 0):
    """Shaded renders of the template under random pose -> list of (image, landmarks (468, 3))."""
    from model.nn.geometry import euler_to_matrix, ndc_to_screen, pose_transform, vertex_normals
    from model.nn.renderer import render

    rng = np.random.default_rng(seed)
    faces = torch.as_tensor(topology.faces)
    template = torch.as_tensor(topology.vertices)[None]
    palette = torch.as_tensor(rng.uniform(0.3, 0.9, (len(topology.region_names), 3)), dtype=torch.float32)
    samples = []
    for _ in range(count):
        angles = torch.as_tensor(rng.uniform(-0.4, 0.4, 3), dtype=torch.float32).view(3, 1)
        rotation = euler_to_matrix(*angles)
        translation = torch.as_tensor([[*rng.uniform(-0.1, 0.1, 2), 0.0]], dtype=torch.float32)
        posed = pose_transform(template, rotation, translation, torch.tensor([rng.uniform(6.0, 8.0)]))
        shading = vertex_normals(posed, faces)[..., 2:].clamp(min=0.2)
        colours = palette[torch.as_tensor(topology.regions)][None] * shading
        screen = ndc_to_screen(posed, size)
        out = render(screen, faces, colours, torch.as_tensor(topology.regions), size, size)
        background = torch.as_tensor(rng.uniform(0, 1, 3), dtype=torch.float32).view(1, 3, 1, 1)
        image = out.image * out.mask + background * (1 - out.mask)
        samples.append(((image[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8),
                        screen[0, :468].numpy().astype(np.float32)))
    return samples


@pytest.fixture(scope="session")
def synthetic_data(topology, tmp_path_factory):
    from training.data.shards import write_shard

    root = tmp_path_factory.mktemp("prepared")
    samples = []
    for image, landmarks in render_synthetic_faces(topology, 24):
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, "JPEG", quality=95)
        samples.append({"jpeg": np.frombuffer(buffer.getvalue(), np.uint8), "landmarks": landmarks,
                        "valid": np.array([0, 0, 192, 192], np.float32)})
    names = [f"synthetic/{i}.jpg" for i in range(len(samples))]
    write_shard(root / "shard_00000.npz", samples, names, [i % 6 == 0 for i in range(len(samples))])
    return root
