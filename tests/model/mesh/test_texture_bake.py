import numpy as np
import pytest

from model.mesh.texture_bake import DILATE_TEXELS, UVRasterMap, bake_uv_texture, sample_vertex_colors


def _manual_bilinear(image: np.ndarray, x: float, y: float) -> np.ndarray:
    """Textbook bilinear lookup of one point, pixel centres at +0.5, edge pixels repeated."""
    height, width = image.shape[:2]
    padded = np.pad(image.astype(float), ((1, 1), (1, 1), (0, 0)), mode="edge")
    # in padded pixel indices, pixel (r, c) of the image is (r + 1, c + 1)
    px = np.clip(x - 0.5, -1, width) + 1
    py = np.clip(y - 0.5, -1, height) + 1
    c0, r0 = int(np.floor(px)), int(np.floor(py))
    fx, fy = px - c0, py - r0
    c1, r1 = min(c0 + 1, width + 1), min(r0 + 1, height + 1)
    top = padded[r0, c0] * (1 - fx) + padded[r0, c1] * fx
    bottom = padded[r1, c0] * (1 - fx) + padded[r1, c1] * fx
    return top * (1 - fy) + bottom * fy


def test_sample_vertex_colors_at_pixel_centres_and_between_them():
    image = np.zeros((2, 2, 3), np.uint8)
    image[0, 1] = 200
    points = np.array([[0.5, 0.5], [1.5, 0.5], [1.0, 0.5], [1.0, 1.0], [-5.0, 9.0], [9.0, -1.0]])
    assert sample_vertex_colors(image, points)[:, 0].tolist() == [0, 200, 100, 50, 0, 200]


def test_sample_vertex_colors_matches_manual_bilinear():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (7, 9, 3), dtype=np.uint8)
    points = rng.uniform([-2, -2], [11, 9], (200, 2))
    expected = np.array([_manual_bilinear(image, x, y) for x, y in points])
    colours = sample_vertex_colors(image, points)
    assert colours.shape == (200, 3) and colours.dtype == np.uint8
    assert np.abs(colours - expected).max() <= 0.5 + 1e-3


def _brute_force_raster(uvs: np.ndarray, faces: np.ndarray, size: int) -> np.ndarray:
    """(size, size) highest index of the triangles whose closed area holds each texel centre, -1 for none."""
    face_index = np.full((size, size), -1)
    for row in range(size):
        for col in range(size):
            point = np.array([(col + 0.5) / size, 1 - (row + 0.5) / size])
            for f, (a, b, c) in enumerate(faces):
                matrix = np.array([uvs[b] - uvs[a], uvs[c] - uvs[a]]).T
                if abs(np.linalg.det(matrix)) < 1e-12:
                    continue
                s, t = np.linalg.solve(matrix, point - uvs[a])
                if min(s, t, 1 - s - t) >= 0:
                    face_index[row, col] = f
    return face_index


def test_uv_raster_map_covers_exactly_the_texels_inside_triangles():
    rng = np.random.default_rng(2)
    uvs = rng.uniform(-0.1, 1.1, (12, 2))  # some triangles reach past the texture
    faces = np.array([rng.choice(12, 3, replace=False) for _ in range(8)] + [[0, 1, 0]])  # + a degenerate one
    size = 24
    raster = UVRasterMap.build(uvs, faces, size)
    expected = _brute_force_raster(uvs, faces, size)
    assert (expected >= 0).sum() > 50
    np.testing.assert_array_equal(raster.face_index, expected)
    # the barycentrics put every covered texel centre where it is
    rows, cols = np.nonzero(raster.face_index >= 0)
    corners = uvs[faces[raster.face_index[rows, cols]]]  # (N, 3, 2)
    centres = np.einsum("nk,nkd->nd", raster.bary[rows, cols], corners)
    np.testing.assert_allclose(centres, np.stack([(cols + 0.5) / size, 1 - (rows + 0.5) / size], 1), atol=1e-6)
    assert raster.bary.dtype == np.float32 and (raster.bary >= 0).all()


def test_texel_centres_on_shared_edges_are_not_dropped():
    # the diagonal of this square passes exactly through texel centres
    uvs = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    raster = UVRasterMap.build(uvs, np.array([[0, 1, 2], [0, 2, 3]]), 16)
    assert (raster.face_index >= 0).all()


def test_raster_map_rebuilt_from_its_arrays_is_the_same():
    uvs = np.array([[0.1, 0.1], [0.9, 0.2], [0.3, 0.8]])
    built = UVRasterMap.build(uvs, np.array([[0, 1, 2]]), 32)
    again = UVRasterMap(face_index=built.face_index.copy(), bary=built.bary.copy())
    for name in ("texels", "texel_faces", "texel_bary", "ring_texels", "ring_sources"):
        np.testing.assert_array_equal(getattr(again, name), getattr(built, name))


@pytest.fixture(scope="module")
def grid_layout() -> tuple[np.ndarray, np.ndarray]:
    """A 9 x 9 vertex grid over the UV square [0.15, 0.85]^2: uvs (81, 2), faces (128, 3)."""
    u, v = np.meshgrid(np.linspace(0.15, 0.85, 9), np.linspace(0.15, 0.85, 9))
    idx = np.arange(81).reshape(9, 9)
    a, b, c, d = idx[:-1, :-1].ravel(), idx[:-1, 1:].ravel(), idx[1:, 1:].ravel(), idx[1:, :-1].ravel()
    faces = np.concatenate([np.stack([a, b, c], 1), np.stack([a, c, d], 1)])
    return np.stack([u.ravel(), v.ravel()], 1), faces


def _gradient_photo() -> np.ndarray:
    """(240, 256, 3) uint8: red = column, green = row, blue = 90; bilinear sampling at (x, y)
    gives exactly (x - 0.5, y - 0.5, 90) away from the borders."""
    rows, cols = np.mgrid[0:240, 0:256]
    return np.stack([cols, rows, np.full_like(rows, 90)], -1).astype(np.uint8)


def _affine(uvs: np.ndarray) -> np.ndarray:
    """Photo position of a UV point: rotated, sheared and mirrored (v up -> y down)."""
    return np.stack([30 + 180 * uvs[:, 0] + 25 * uvs[:, 1], 215 - 170 * uvs[:, 1] + 20 * uvs[:, 0]], 1)


def test_baked_texture_matches_the_analytic_colours(grid_layout):
    uvs, faces = grid_layout
    size = 64
    raster = UVRasterMap.build(uvs, faces, size)
    texture = bake_uv_texture(_gradient_photo(), _affine(uvs), faces, raster)
    assert texture.shape == (size, size, 3) and texture.dtype == np.uint8
    rows, cols = np.mgrid[0:size, 0:size]
    texel_uv = np.stack([(cols + 0.5) / size, 1 - (rows + 0.5) / size], -1).reshape(-1, 2)
    expected = _affine(texel_uv).reshape(size, size, 2) - 0.5
    inside = raster.face_index >= 0
    assert inside.mean() > 0.4
    assert np.abs(texture[..., 0][inside] - expected[..., 0][inside]).max() <= 0.51
    assert np.abs(texture[..., 1][inside] - expected[..., 1][inside]).max() <= 0.51
    assert (texture[..., 2] == 90).all()


def test_outside_the_layout_a_ring_copies_its_edge_and_the_rest_is_the_mean(grid_layout):
    uvs, faces = grid_layout
    size = 64
    raster = UVRasterMap.build(uvs, faces, size)
    texture = bake_uv_texture(_gradient_photo(), _affine(uvs), faces, raster)
    covered = raster.face_index >= 0
    first_row = np.nonzero(covered.any(axis=1))[0][0]
    first_col = np.nonzero(covered[first_row])[0][0]
    # straight above the layout's top-left texel: the ring copies it
    for step in range(1, DILATE_TEXELS + 1):
        assert (texture[first_row - step, first_col + 5] == texture[first_row, first_col + 5]).all()
    mean = np.rint(texture[covered].mean(axis=0))
    np.testing.assert_allclose(texture[0, 0], mean, atol=1)
    assert (texture[: first_row - DILATE_TEXELS] == texture[0, 0]).all()


def test_hidden_triangles_take_the_nearest_visible_colour_in_their_row():
    # two squares side by side in the layout; the photo's right square area is pure blue
    left = np.array([[0.1, 0.1], [0.45, 0.1], [0.45, 0.9], [0.1, 0.9]])
    uvs = np.concatenate([left, left + [0.45, 0]])
    faces = np.array([[0, 1, 2], [0, 2, 3], [4, 5, 6], [4, 6, 7]])
    photo = _gradient_photo()
    points = _affine(uvs)
    photo[:, 140:] = (0, 0, 255)
    size = 40
    raster = UVRasterMap.build(uvs, faces, size)
    visible = np.array([True] * 4 + [False] * 4)
    texture = bake_uv_texture(photo, points, faces, raster, visible=visible)
    right = np.isin(raster.face_index, [2, 3])
    assert right.sum() > 100 and not (texture[right] == (0, 0, 255)).all(axis=1).any()
    for row in np.nonzero(right.any(axis=1))[0]:
        last_visible = np.nonzero(np.isin(raster.face_index[row], [0, 1]))[0].max()
        assert (texture[row][right[row]] == texture[row, last_visible]).all()
    # all visible or none visible: plain sampling
    plain = bake_uv_texture(photo, points, faces, raster)
    for everything in (np.ones(8, bool), np.zeros(8, bool)):
        np.testing.assert_array_equal(bake_uv_texture(photo, points, faces, raster, visible=everything), plain)


def test_a_triangle_with_one_visible_vertex_is_sampled(grid_layout):
    uvs, faces = grid_layout
    raster = UVRasterMap.build(uvs, faces, 32)
    photo, points = _gradient_photo(), _affine(uvs)
    visible = np.zeros(len(uvs), bool)
    visible[faces[:, 0]] = True  # every triangle has a visible vertex
    np.testing.assert_array_equal(
        bake_uv_texture(photo, points, faces, raster, visible=visible), bake_uv_texture(photo, points, faces, raster)
    )
