import numpy as np
import pytest

torch = pytest.importorskip("torch")

from model.renderer import Fragments, interpolate, rasterize, render  # noqa: E402


def brute_force(screen: np.ndarray, faces: np.ndarray, height: int, width: int):
    """Reference z-buffer: loops over every pixel and triangle. screen (V, 3)."""
    face_index = -np.ones((height, width), int)
    depth = np.full((height, width), -np.inf)
    bary = np.zeros((height, width, 3))
    for i in range(height):
        for j in range(width):
            px, py = j + 0.5, i + 0.5
            for f, (a, b, c) in enumerate(faces):
                (x0, y0, z0), (x1, y1, z1), (x2, y2, z2) = screen[a], screen[b], screen[c]
                area = (x1 - x0) * (y2 - y0) - (y1 - y0) * (x2 - x0)
                if abs(area) < 1e-12:
                    continue
                w = np.array([
                    (x2 - x1) * (py - y1) - (y2 - y1) * (px - x1),
                    (x0 - x2) * (py - y2) - (y0 - y2) * (px - x2),
                    (x1 - x0) * (py - y0) - (y1 - y0) * (px - x0),
                ]) / area
                if (w >= -1e-5).all():
                    z = w @ np.array([z0, z1, z2])
                    if z > depth[i, j]:
                        depth[i, j], face_index[i, j], bary[i, j] = z, f, w
    return face_index, bary, depth


def random_scene(seed: int, height: int = 20, width: int = 24):
    rng = np.random.default_rng(seed)
    triangles = []
    for _ in range(6):
        centre = rng.uniform([-4, -4], [width + 4, height + 4])  # some cross the border
        corners = centre + rng.normal(0, 7, (3, 2))
        depth = rng.uniform(-5, 5, (3, 1))
        triangles.append(np.hstack([corners, depth]))
    degenerate = np.array([[2.0, 2.0, 1.0], [10.0, 10.0, 1.0], [18.0, 18.0, 1.0]])  # collinear
    triangles.append(degenerate)
    screen = np.concatenate(triangles)
    faces = np.arange(len(screen)).reshape(-1, 3)
    faces[1::2] = faces[1::2][:, ::-1]  # both windings
    return screen, faces, height, width


@pytest.mark.parametrize("seed", range(5))
def test_matches_brute_force_z_buffer(seed):
    screen, faces, height, width = random_scene(seed)
    fragments = rasterize(torch.tensor(screen, dtype=torch.float64)[None], torch.tensor(faces), height, width)
    want_face, want_bary, _ = brute_force(screen, faces, height, width)
    got_face = fragments.face_index[0].numpy()
    assert np.array_equal(got_face >= 0, want_face >= 0)
    agree = got_face == want_face
    assert agree.mean() > 0.99  # exact depth ties may go either way
    np.testing.assert_allclose(fragments.bary[0].numpy()[agree], want_bary[agree], atol=1e-9)
    assert np.all(fragments.bary[0].numpy()[got_face < 0] == 0)


def test_shared_edges_leave_no_holes():
    # A square of two triangles whose diagonal passes exactly through pixel centres.
    screen = torch.tensor([[[0.0, 0.0, 0.0], [8.0, 0.0, 0.0], [8.0, 8.0, 0.0], [0.0, 8.0, 0.0]]])
    faces = torch.tensor([[0, 1, 2], [0, 2, 3]])
    fragments = rasterize(screen, faces, 8, 8)
    assert fragments.mask.all()


def test_batch_elements_are_independent():
    screen, faces, height, width = random_scene(3)
    one = torch.tensor(screen, dtype=torch.float32)
    two = torch.stack([one, one.flip(0) * torch.tensor([1.0, 1.0, -1.0])])
    fragments = rasterize(two, torch.tensor(faces), height, width)
    single = rasterize(one[None], torch.tensor(faces), height, width)
    assert torch.equal(fragments.face_index[:1], single.face_index)


def test_interpolation_gradcheck_attributes_and_positions():
    torch.manual_seed(0)
    screen = torch.tensor([[[1.3, 1.1, 0.2], [9.7, 2.2, 0.5], [4.1, 8.9, -0.3], [9.2, 9.4, 0.1]]], dtype=torch.float64)
    faces = torch.tensor([[0, 1, 2], [1, 3, 2]])
    attributes = torch.rand(1, 4, 2, dtype=torch.float64)
    screen.requires_grad_(True)
    attributes.requires_grad_(True)

    def shade(positions, values):
        return interpolate(values, faces, rasterize(positions, faces, 11, 11))

    assert torch.autograd.gradcheck(shade, (screen, attributes), eps=1e-6, atol=1e-6)


def test_image_loss_gradients_move_vertices_toward_a_target():
    faces = torch.tensor([[0, 1, 2]])
    colours = torch.eye(3)[None]  # red, green, blue corners
    regions = torch.zeros(3, dtype=torch.long)
    goal = torch.tensor([[[3.0, 3.0, 0.0], [28.0, 5.0, 0.0], [6.0, 27.0, 0.0]]])
    target = render(goal, faces, colours, regions, 32, 32)
    screen = (goal + torch.tensor([1.5, -1.0, 0.0])).requires_grad_(True)
    optimiser = torch.optim.Adam([screen], lr=0.1)
    losses = []
    for _ in range(60):
        optimiser.zero_grad()
        out = render(screen, faces, colours, regions, 32, 32)
        both = out.mask * target.mask
        loss = (((out.image - target.image) ** 2) * both).sum() / both.sum()
        loss.backward()
        assert torch.isfinite(screen.grad).all() and screen.grad.abs().sum() > 0
        optimiser.step()
        losses.append(loss.item())
    assert losses[-1] < 0.1 * losses[0]
    assert (screen.detach() - goal).abs().max() < 0.5


def test_z_buffer_shows_the_nearer_surface_of_a_closed_mesh():
    trimesh = pytest.importorskip("trimesh")
    sphere = trimesh.creation.icosphere(subdivisions=3, radius=10.0)
    screen = torch.tensor(sphere.vertices, dtype=torch.float32) * torch.tensor([1.0, -1.0, 1.0]) + torch.tensor([16.0, 16.0, 0.0])
    faces = torch.tensor(sphere.faces)
    regions = torch.tensor((sphere.vertices[:, 2] > 0).astype(np.int64))
    out = render(screen[None], faces, screen[None, :, 2:], regions, 32, 32)
    depth = out.image[0, 0][out.mask[0, 0] > 0]
    assert depth.min() > 0  # only the front half is visible
    assert set(out.region_map[out.mask[:, 0] > 0].unique().tolist()) == {1}
    assert torch.equal(out.mask[:, 0] > 0, out.fragments.face_index >= 0)
    assert (out.region_map[out.mask[:, 0] == 0] == -1).all()


def test_region_map_takes_the_nearest_corner_label():
    screen = torch.tensor([[[0.0, 0.0, 0.0], [16.0, 0.0, 0.0], [0.0, 16.0, 0.0]]])
    out = render(screen, torch.tensor([[0, 1, 2]]), torch.ones(1, 3, 1), torch.tensor([5, 6, 7]), 16, 16)
    assert out.region_map[0, 0, 0] == 5 and out.region_map[0, 0, 13] == 6 and out.region_map[0, 13, 0] == 7
    assert out.region_map[0, 15, 15] == -1


def test_fragments_mask_property():
    fragments = Fragments(face_index=torch.tensor([[[-1, 0]]]), bary=torch.zeros(1, 1, 2, 3))
    assert fragments.mask.tolist() == [[[False, True]]]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_runs_on_cuda():
    screen, faces, height, width = random_scene(1)
    cpu = rasterize(torch.tensor(screen, dtype=torch.float32)[None], torch.tensor(faces), height, width)
    gpu = rasterize(torch.tensor(screen, dtype=torch.float32, device="cuda")[None], torch.tensor(faces), height, width)
    assert torch.equal(cpu.face_index, gpu.face_index.cpu())
