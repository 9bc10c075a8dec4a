import numpy as np
import pytest

torch = pytest.importorskip("torch")

import model.nn.renderer as renderer  # noqa: E402
from model.nn.renderer import Fragments, interpolate, rasterize, render  # noqa: E402

TOLERANCE = 1e-5  # the renderer's edge tolerance, in barycentric units


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
                if (w >= -TOLERANCE).all():
                    z = w @ np.array([z0, z1, z2])
                    if z > depth[i, j]:
                        depth[i, j], face_index[i, j], bary[i, j] = z, f, w
    return face_index, bary, depth


def random_scene(seed: int, height: int = 20, width: int = 24):
    """Overlapping triangles of both windings, some crossing the border, one wholly off-screen,
    two degenerate. Returns screen (V, 3), faces (F, 3), height, width."""
    rng = np.random.default_rng(seed)
    triangles = []
    for _ in range(6):
        centre = rng.uniform([-4, -4], [width + 4, height + 4])
        corners = centre + rng.normal(0, 7, (3, 2))
        depth = rng.uniform(-5, 5, (3, 1))
        triangles.append(np.hstack([corners, depth]))
    triangles.append(np.array([[2.0, 2.0, 1.0], [10.0, 10.0, 1.0], [18.0, 18.0, 1.0]]))  # collinear
    triangles.append(np.array([[3.0, 15.0, 2.0], [3.0, 15.0, 2.0], [20.0, 4.0, 2.0]]))  # repeated corner
    triangles.append(np.array([[-9.0, 2.0, 3.0], [-1.0, 5.0, 3.0], [-4.0, 30.0, 3.0]]))  # left of the image
    screen = np.concatenate(triangles)
    faces = np.arange(len(screen)).reshape(-1, 3)
    faces[1::2] = faces[1::2][:, ::-1]
    return screen, faces, height, width


@pytest.mark.parametrize("seed", range(5))
def test_matches_brute_force_z_buffer(seed):
    screen, faces, height, width = random_scene(seed)
    fragments = rasterize(torch.tensor(screen, dtype=torch.float64)[None], torch.tensor(faces), height, width)
    want_face, want_bary, _ = brute_force(screen, faces, height, width)
    got_face = fragments.face_index[0].numpy()
    assert fragments.face_index.shape == (1, height, width) and fragments.bary.shape == (1, height, width, 3)
    assert np.array_equal(got_face >= 0, want_face >= 0)
    assert not np.isin(got_face, [6, 7, 8]).any()  # the degenerate and off-screen triangles
    agree = got_face == want_face
    assert agree.mean() > 0.99  # exact depth ties may go either way
    np.testing.assert_allclose(fragments.bary[0].numpy()[agree], want_bary[agree], atol=1e-9)
    assert np.all(fragments.bary[0].numpy()[got_face < 0] == 0)


@pytest.mark.parametrize("seed", range(3))
def test_float32_agrees_with_float64(seed):
    screen, faces, height, width = random_scene(seed)
    double = rasterize(torch.tensor(screen)[None], torch.tensor(faces), height, width)
    single = rasterize(torch.tensor(screen, dtype=torch.float32)[None], torch.tensor(faces), height, width)
    assert single.bary.dtype == torch.float32
    assert (single.face_index == double.face_index).float().mean() > 0.99
    same = single.face_index == double.face_index
    torch.testing.assert_close(single.bary[same].double(), double.bary[same], atol=1e-4, rtol=0)


def test_candidate_chunks_do_not_change_the_result(monkeypatch):
    screen, faces, height, width = random_scene(2)
    screen = torch.tensor(screen, dtype=torch.float32)[None]
    whole = rasterize(screen, torch.tensor(faces), height, width)
    monkeypatch.setattr(renderer, "_MAX_CANDIDATES", 16)
    chunked = rasterize(screen, torch.tensor(faces), height, width)
    assert torch.equal(whole.face_index, chunked.face_index)
    assert torch.equal(whole.bary, chunked.bary)


def test_shared_edges_and_vertices_leave_no_holes():
    # A square split along a diagonal through pixel centres, and a fan of 8 triangles around a
    # vertex placed exactly on a pixel centre, whose spokes run along rows, columns and diagonals.
    square = torch.tensor([[[0.0, 0.0, 0.0], [7.0, 0.0, 0.0], [7.0, 7.0, 0.0], [0.0, 7.0, 0.0]]])
    assert rasterize(square, torch.tensor([[0, 1, 2], [0, 2, 3]]), 7, 7).mask.all()
    angles = torch.arange(8) * torch.pi / 4
    rim = torch.stack([8.5 + 20 * torch.cos(angles), 8.5 + 20 * torch.sin(angles), torch.zeros(8)], dim=1)
    fan = torch.cat([torch.tensor([[8.5, 8.5, 0.0]]), rim])[None]
    spokes = torch.tensor([[0, 1 + k, 1 + (k + 1) % 8] for k in range(8)])
    assert rasterize(fan, spokes, 17, 17).mask.all()


def test_batch_elements_are_independent():
    screen, faces, height, width = random_scene(3)
    one = torch.tensor(screen, dtype=torch.float32)
    two = torch.stack([one, one.flip(0) * torch.tensor([1.0, 1.0, -1.0])])
    fragments = rasterize(two, torch.tensor(faces), height, width)
    single = rasterize(one[None], torch.tensor(faces), height, width)
    assert torch.equal(fragments.face_index[:1], single.face_index)
    assert torch.equal(fragments.bary[:1], single.bary)


def test_no_faces_renders_an_empty_image():
    out = render(torch.rand(2, 4, 3) * 8, torch.zeros(0, 3, dtype=torch.long), torch.rand(2, 4, 2),
                 torch.zeros(4, dtype=torch.long), 8, 9)
    assert out.image.shape == (2, 2, 8, 9) and not out.image.any()
    assert not out.mask.any() and (out.region_map == -1).all()


def test_interpolation_gradcheck_attributes_and_positions():
    screen = torch.tensor([[[1.3, 1.1, 0.2], [9.7, 2.2, 0.5], [4.1, 8.9, -0.3], [9.2, 9.4, 0.1]]], dtype=torch.float64)
    faces = torch.tensor([[0, 1, 2], [1, 3, 2]])
    attributes = torch.rand(1, 4, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
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
        assert torch.isfinite(screen.grad).all() and screen.grad[..., :2].abs().min() > 0
        optimiser.step()
        losses.append(loss.item())
    assert losses[-1] < 0.1 * losses[0]
    assert (screen.detach() - goal)[..., :2].abs().max() < 0.5


def test_gradients_reach_positions_and_colours_of_every_batch_element():
    screen, faces, height, width = random_scene(4)
    faces = torch.tensor(faces)
    num_vertices = len(screen)
    jitter = torch.randn(3, num_vertices, 3, generator=torch.Generator().manual_seed(0)) * 0.3
    screen = (torch.tensor(screen, dtype=torch.float32) + jitter).requires_grad_(True)
    colours = torch.rand(3, num_vertices, 3, generator=torch.Generator().manual_seed(1)).requires_grad_(True)
    out = render(screen, faces, colours, torch.zeros(num_vertices, dtype=torch.long), height, width)
    out.image.square().mean().backward()
    # Vertices of the triangles visible in each image (every triangle has its own three vertices).
    visible = torch.zeros(3, num_vertices, dtype=torch.bool)
    for b, face_index in enumerate(out.fragments.face_index):
        visible[b, faces[face_index[face_index >= 0].unique()].flatten()] = True
    assert torch.isfinite(screen.grad).all() and torch.isfinite(colours.grad).all()
    assert torch.equal(screen.grad[..., :2].abs().sum(-1) > 0, visible)
    assert torch.equal(colours.grad.abs().sum(-1) > 0, visible)
    assert (screen.grad[..., 2] == 0).all()  # orthographic: depth does not change the image


def test_z_buffer_shows_the_nearer_surface_of_a_closed_mesh():
    trimesh = pytest.importorskip("trimesh")
    sphere = trimesh.creation.icosphere(subdivisions=3, radius=10.0)
    vertices = sphere.vertices * [1.0, -1.0, 1.0] + [16.0, 16.0, 0.0]
    screen = torch.tensor(vertices, dtype=torch.float32)[None]
    regions = torch.tensor((sphere.vertices[:, 2] > 0).astype(np.int64))
    out = render(screen, torch.tensor(sphere.faces), screen[..., 2:], regions, 32, 32)

    # Depth of every triangle at every pixel centre it covers, vectorised: the nearest must win.
    corners = vertices[sphere.faces]  # (F, 3, 3)
    j, i = np.meshgrid(np.arange(32) + 0.5, np.arange(32) + 0.5)
    p = np.stack([j.ravel(), i.ravel()], axis=1)[:, None, None, :]  # (P, 1, 1, 2)
    d = corners[None, :, :, :2] - p  # (P, F, 3, 2)
    cross = np.stack([d[..., (k + 1) % 3, 0] * d[..., (k + 2) % 3, 1] - d[..., (k + 1) % 3, 1] * d[..., (k + 2) % 3, 0]
                      for k in range(3)], axis=-1)  # (P, F, 3)
    area = cross.sum(-1, keepdims=True)
    edge_on = np.abs(area) < 1e-12  # triangles seen edge-on cover nothing
    weights = cross / np.where(edge_on, 1.0, area)
    inside = (weights >= -TOLERANCE).all(-1) & ~edge_on[..., 0]
    depth = np.where(inside, (weights * corners[None, :, :, 2]).sum(-1), -np.inf)
    nearest = depth.max(axis=1).reshape(32, 32)

    covered = out.mask[0, 0] > 0
    assert np.array_equal(covered.numpy(), np.isfinite(nearest))
    np.testing.assert_allclose(out.image[0, 0][covered].numpy(), nearest[covered.numpy()], atol=1e-4)
    assert out.image[0, 0][covered].min() > 0  # only the front half is visible
    assert set(out.region_map[0][covered].unique().tolist()) == {1}


def test_region_map_takes_the_label_of_the_nearest_corner():
    screen = torch.tensor([[[0.0, 0.0, 0.0], [16.0, 0.0, 0.0], [0.0, 16.0, 0.0]]])
    out = render(screen, torch.tensor([[0, 1, 2]]), torch.ones(1, 3, 1), torch.tensor([5, 6, 7]), 16, 16)
    bary = out.fragments.bary[0]
    expected = torch.tensor([5, 6, 7])[bary.argmax(-1)]
    assert torch.equal(out.region_map[0][out.mask[0, 0] > 0], expected[out.mask[0, 0] > 0])
    assert out.region_map[0, 0, 0] == 5 and out.region_map[0, 0, 13] == 6 and out.region_map[0, 13, 0] == 7
    assert (out.region_map[0][out.mask[0, 0] == 0] == -1).all() and out.region_map[0, 15, 15] == -1


def test_mask_and_image_follow_face_index():
    screen, faces, height, width = random_scene(0)
    screen = torch.tensor(screen, dtype=torch.float32)[None]
    num_vertices = screen.shape[1]
    colours = torch.rand(1, num_vertices, 4) + 1
    out = render(screen, torch.tensor(faces), colours, torch.zeros(num_vertices, dtype=torch.long), height, width)
    covered = out.fragments.face_index >= 0
    assert out.mask.shape == (1, 1, height, width) and out.mask.dtype == torch.float32
    assert torch.equal(out.mask[:, 0] > 0, covered)
    assert (out.image.permute(0, 2, 3, 1)[covered] > 0).all() and not out.image.permute(0, 2, 3, 1)[~covered].any()
    assert torch.equal(out.fragments.covered_pixels, covered.flatten().nonzero().squeeze(1))


def test_fragments_mask_property():
    fragments = Fragments(face_index=torch.tensor([[[-1, 0]]]), bary=torch.zeros(1, 1, 2, 3))
    assert fragments.mask.tolist() == [[[False, True]]]
    assert fragments.covered_pixels.tolist() == [1]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_runs_on_cuda():
    screen, faces, height, width = random_scene(1)
    faces = torch.tensor(faces)
    results = []
    for device in ("cpu", "cuda"):
        positions = torch.tensor(screen, dtype=torch.float32, device=device)[None].requires_grad_(True)
        colours = torch.linspace(0, 1, positions.shape[1] * 3, device=device).view(1, -1, 3).requires_grad_(True)
        out = render(positions, faces.to(device), colours, torch.arange(positions.shape[1], device=device),
                     height, width)
        assert out.image.device.type == device
        out.image.square().sum().backward()
        results.append([t.detach().cpu() for t in (out.fragments.face_index, out.region_map, out.image,
                                                   positions.grad, colours.grad)])
    (face_cpu, region_cpu, *rest_cpu), (face_gpu, region_gpu, *rest_gpu) = results
    assert torch.equal(face_cpu, face_gpu) and torch.equal(region_cpu, region_gpu)
    for cpu, gpu in zip(rest_cpu, rest_gpu):
        torch.testing.assert_close(cpu, gpu, atol=1e-4, rtol=1e-4)
