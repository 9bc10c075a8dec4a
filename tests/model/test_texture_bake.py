import numpy as np
import pytest

from model.texture_bake import UVRasterMap, bake_uv_texture, sample_vertex_colors


def _gradient_photo(height: int = 120, width: int = 160) -> np.ndarray:
    yy, xx = np.mgrid[0:height, 0:width]
    return np.stack([xx * 255 / (width - 1), yy * 255 / (height - 1), np.full_like(xx, 80)], -1).astype(np.uint8)


def test_sample_vertex_colors_is_bilinear_at_pixel_centres():
    image = np.zeros((2, 2, 3), np.uint8)
    image[0, 1] = 200
    points = np.array([[0.5, 0.5], [1.5, 0.5], [1.0, 0.5], [1.0, 1.0], [-5.0, 9.0]])
    colours = sample_vertex_colors(image, points)
    assert colours[:, 0].tolist() == [0, 200, 100, 50, 0]


def test_uv_raster_map_matches_a_brute_force_scan():
    uvs = np.array([[0.1, 0.1], [0.9, 0.2], [0.3, 0.8], [0.95, 0.95]])
    faces = np.array([[0, 1, 2], [1, 3, 2]])
    size = 16
    raster = UVRasterMap.build(uvs, faces, size)
    for r in range(size):
        for c in range(size):
            u, v = (c + 0.5) / size, 1 - (r + 0.5) / size
            inside = []
            for f, (a, b, d) in enumerate(faces):
                m = np.array([uvs[b] - uvs[a], uvs[d] - uvs[a]]).T
                s, t = np.linalg.solve(m, np.array([u, v]) - uvs[a])
                if min(s, t, 1 - s - t) >= -1e-7:
                    inside.append(f)
            assert (raster.face_index[r, c] in inside) if inside else raster.face_index[r, c] == -1
    assert np.allclose(raster.bary[raster.face_index >= 0].sum(-1), 1.0, atol=1e-6)


def test_baked_texture_matches_the_analytic_colours():
    photo = _gradient_photo()
    uvs = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    faces = np.array([[0, 1, 2], [0, 2, 3]])
    # Image points: an affine map of the UVs into the photo.
    points = np.stack([20 + 100 * uvs[:, 0], 100 - 80 * uvs[:, 1]], 1)
    size = 32
    texture = bake_uv_texture(photo, points, faces, UVRasterMap.build(uvs, faces, size))
    rows, cols = np.mgrid[0:size, 0:size]
    u, v = (cols + 0.5) / size, 1 - (rows + 0.5) / size
    x, y = 20 + 100 * u, 100 - 80 * v
    expected_r = (x - 0.5) * 255 / 159
    expected_g = (y - 0.5) * 255 / 119
    assert np.abs(texture[..., 0] - expected_r).max() <= 2.0
    assert np.abs(texture[..., 1] - expected_g).max() <= 2.0
    assert (texture[..., 2] == 80).all()


def test_texels_outside_the_layout_and_hidden_triangles_are_filled_from_neighbours():
    photo = np.zeros((50, 50, 3), np.uint8)
    photo[:, :25] = (200, 10, 10)
    photo[:, 25:] = (10, 10, 200)
    uvs = np.array([[0.1, 0.1], [0.5, 0.1], [0.5, 0.9], [0.1, 0.9], [0.9, 0.1], [0.9, 0.9]])
    faces = np.array([[0, 1, 2], [0, 2, 3], [1, 4, 5], [1, 5, 2]])
    points = uvs * 50 * np.array([1, -1]) + np.array([0, 50])
    raster = UVRasterMap.build(uvs, faces, 20)
    visible = np.array([True, True, True, True, False, False])
    texture = bake_uv_texture(photo, points, faces, raster, visible=visible)
    # The right half's triangles touch visible vertices 1 and 2, so they are sampled; a vertex
    # set with nothing visible on the right takes the left colour instead.
    assert texture[10, 15, 2] > 150
    hidden = bake_uv_texture(photo, points, faces, raster, visible=np.array([True, False, False, True, False, False]))
    assert hidden[10, 15, 0] > 150 and hidden[10, 15, 2] < 100
    assert texture.shape == (20, 20, 3) and texture[0, 0].sum() > 0  # corners outside the layout filled


@pytest.mark.parametrize("size", [128, 512])
def test_face_layout_covers_most_of_the_texture(topology, size):
    raster = UVRasterMap.build(topology.uvs, topology.faces, size)
    coverage = (raster.face_index >= 0).mean()
    assert 0.65 < coverage < np.pi / 4 + 0.01  # a disc of radius 0.48 in the unit square
