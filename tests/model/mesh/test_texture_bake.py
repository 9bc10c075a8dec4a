import numpy as np
import pytest

from model.mesh.structure import mesh_structure
from model.mesh.texture_bake import (
    DILATE_TEXELS,
    FILL_SEEN,
    FILL_SHARE,
    UVRasterMap,
    bake_uv_texture,
    bake_vertex_texture,
    merge_uv_textures,
    merge_vertex_colors,
    sample_vertex_colors,
)
from model.mesh.visibility import FaceVisibility, face_visibility


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
    again = UVRasterMap(face_index=built.face_index.copy(), bary=built.bary.copy(), uvs=built.uvs)
    for name in ("texels", "texel_faces", "texel_bary", "ring_texels", "ring_sources", "uvs"):
        np.testing.assert_array_equal(getattr(again, name), getattr(built, name))
    with pytest.raises(ValueError, match="uvs"):
        UVRasterMap(face_index=built.face_index, bary=built.bary, uvs=np.zeros((3, 3)))


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


def _grid_mirror() -> np.ndarray:
    """The left/right mirror of the 9 x 9 grid layout: column c <-> 8 - c (u <-> 1 - u)."""
    return np.arange(81).reshape(9, 9)[:, ::-1].ravel()


def _seen(weight, mirror=None, groups=None) -> FaceVisibility:
    weight = np.asarray(weight, np.float32)
    count = len(weight)
    return FaceVisibility(weight=weight, sample_points=np.zeros((count, 2), np.float32),
                          mirror=np.arange(count) if mirror is None else mirror,
                          groups=np.zeros(count, np.int64) if groups is None else groups)


def test_fully_seen_vertices_and_texels_keep_their_own_samples(grid_layout):
    uvs, faces = grid_layout
    raster = UVRasterMap.build(uvs, faces, 32)
    photo, points = _gradient_photo(), _affine(uvs)
    seen = _seen(np.ones(81), _grid_mirror())
    np.testing.assert_array_equal(sample_vertex_colors(photo, points, seen), sample_vertex_colors(photo, points))
    np.testing.assert_array_equal(bake_uv_texture(photo, points, faces, raster, seen),
                                  bake_uv_texture(photo, points, faces, raster))


def test_unseen_vertices_take_their_mirror_vertex_colour(grid_layout):
    uvs, _ = grid_layout
    photo, points = _gradient_photo(), _affine(uvs)
    column = np.arange(81) % 9
    weight = np.where(column > 4, 0.0, 1.0)
    weight[column == 4] = 0.25  # partly seen: a quarter its own colour, the rest its mirror's (itself)
    weight[40] = 0.0  # the centre is its own mirror: unseen on both sides, it takes the fill
    plain = sample_vertex_colors(photo, points).astype(float)
    colours = sample_vertex_colors(photo, points, _seen(weight, _grid_mirror())).astype(float)
    right = column > 4
    np.testing.assert_allclose(colours[right], plain[_grid_mirror()[right]], atol=0.51)
    np.testing.assert_allclose(colours[column < 4], plain[column < 4], atol=0.51)
    fill = (plain * weight[:, None]).sum(axis=0) / weight.sum()  # one group: the mean seen colour
    np.testing.assert_allclose(colours[40], fill, atol=0.51)


def test_partly_seen_vertices_blend_their_own_and_mirror_colours():
    photo = np.zeros((4, 4, 3), np.uint8)
    photo[:, :2] = (200, 0, 0)
    photo[:, 2:] = (0, 0, 200)
    points = np.array([[0.5, 0.5], [3.5, 0.5], [0.5, 3.5], [3.5, 3.5]])
    mirror = np.array([1, 0, 3, 2])
    seen = _seen([0.25, 1.0, 0.0, 0.1], mirror, groups=np.array([0, 0, 1, 1]))
    colours = sample_vertex_colors(photo, points, seen)
    np.testing.assert_allclose(colours[0], [50, 0, 150], atol=1)  # 1/4 own red, 3/4 mirrored blue
    np.testing.assert_array_equal(colours[1], [0, 0, 200])
    # vertex 2 (weight 0, red in the photo) and its mirror 3 (weight 0.1, blue), both barely
    # seen: 4/5 the mirror's blue and 1/5 the fill, the group's mean seen colour (vertex 3's blue)
    np.testing.assert_allclose(colours[2], [0, 0, 200], atol=1)
    # vertex 3: 4/5 its own blue, 1/5 the blue fill; its unseen mirror has no say
    np.testing.assert_allclose(colours[3], [0, 0, 200], atol=1)
    seen = _seen([0.0, 1.0, 0.0, 0.0], mirror, groups=np.array([0, 0, 1, 1]))
    np.testing.assert_allclose(sample_vertex_colors(photo, points, seen)[3], [0, 0, 200], atol=1)  # only its mirror
    # nothing of group 1 seen: the fill is the mean seen colour of all (vertex 1's blue) ...
    np.testing.assert_allclose(sample_vertex_colors(photo, points, seen)[2], [0, 0, 200], atol=1)
    # ... and nothing seen at all: the plain mean sample
    nothing = sample_vertex_colors(photo, points, _seen(np.zeros(4), mirror))
    np.testing.assert_allclose(nothing, [[100, 0, 100]] * 4, atol=1)


def test_unseen_groups_fill_from_their_seen_members():
    photo = np.zeros((2, 4, 3), np.uint8)
    photo[:, 0] = (240, 0, 0)
    photo[:, 1] = (0, 240, 0)
    photo[:, 2] = (0, 0, 240)
    points = np.array([[0.5, 0.5], [1.5, 0.5], [2.5, 0.5], [3.5, 0.5]])
    groups = np.array([0, 0, 1, 1])
    seen = _seen([1.0, 0.0, 1.0, 0.0], np.arange(4), groups)  # vertices 1 and 3: their own mirrors, unseen
    colours = sample_vertex_colors(photo, points, seen)
    assert colours[1].tolist() == [240, 0, 0] and colours[3].tolist() == [0, 0, 240]  # their group's seen colour
    # partly seen vertices keep their own share: FILL_SHARE at weight 0 fades out by FILL_SEEN
    weight = FILL_SEEN / 2
    colours = sample_vertex_colors(photo, points, _seen([1.0, weight, 1.0, 0.0], np.array([0, 3, 2, 1]), groups))
    own = weight / (weight + FILL_SHARE / 2)
    fill = np.array([240, 240 * weight, 0]) / (1 + weight)  # group 0: vertex 0's red, a little of vertex 1's green
    np.testing.assert_allclose(colours[1], own * np.array([0, 240, 0]) + (1 - own) * fill, atol=1)


def test_unseen_patches_fill_from_the_seen_vertices_around_them(grid_layout):
    uvs, faces = grid_layout
    photo, points = _gradient_photo(), _affine(uvs)
    row, column = np.divmod(np.arange(81), 9)
    patch = (row >= 2) & (row <= 4) & (column >= 3) & (column <= 5)  # its mirror is itself
    weight = np.where(patch, 0.0, 1.0)
    plain = sample_vertex_colors(photo, points).astype(float)
    structure = mesh_structure(faces, 81)
    seen = FaceVisibility(weight=weight.astype(np.float32), sample_points=points.astype(np.float32),
                          mirror=_grid_mirror(), groups=np.zeros(81, np.int64), structure=structure)
    colours = sample_vertex_colors(photo, points, seen).astype(float)
    centre = 3 * 9 + 4
    group_mean = (plain * weight[:, None]).sum(axis=0) / weight.sum()
    # the photo is a linear gradient: the seen ring around the patch averages to about its centre's colour
    assert np.abs(colours[centre] - plain[centre]).max() < 8 < np.abs(group_mean - plain[centre]).max()
    without_structure = sample_vertex_colors(photo, points, _seen(weight, _grid_mirror()))
    np.testing.assert_allclose(without_structure[centre], group_mean, atol=1)


def test_unseen_texels_take_their_mirror_texels_colour(grid_layout):
    uvs, faces = grid_layout
    size = 48
    raster = UVRasterMap.build(uvs, faces, size)
    photo, points = _gradient_photo(), _affine(uvs)
    column = np.arange(81) % 9
    weight = np.where(column >= 4, 0.0, 1.0)  # the right half (and the middle column) unseen
    texture = bake_uv_texture(photo, points, faces, raster, _seen(weight, _grid_mirror()))
    plain = bake_uv_texture(photo, points, faces, raster)
    # (the middle column is its own mirror: next to it, the mirror texels are partly unseen too)
    hidden = np.isin(raster.face_index, np.flatnonzero((column[faces] >= 5).all(axis=1)))
    rows, cols = np.nonzero(hidden)
    assert len(rows) > 300
    # the layout is symmetric in u: texel (row, col) mirrors to (row, size - 1 - col)
    np.testing.assert_array_equal(texture[rows, cols], plain[rows, size - 1 - cols])
    seen = np.isin(raster.face_index, np.flatnonzero((column[faces] < 4).all(axis=1)))
    np.testing.assert_array_equal(texture[seen], plain[seen])


def test_mirror_texels_need_the_layout_uvs(grid_layout):
    uvs, faces = grid_layout
    built = UVRasterMap.build(uvs, faces, 16)
    bare = UVRasterMap(face_index=built.face_index, bary=built.bary)
    seen = _seen(np.zeros(81), _grid_mirror())
    with pytest.raises(ValueError, match="uvs"):
        bake_uv_texture(_gradient_photo(), _affine(uvs), faces, bare, seen)
    with pytest.raises(ValueError, match="visibility.weight"):
        bake_uv_texture(_gradient_photo(), _affine(uvs), faces, built, _seen(np.zeros(5)))
    mirror = built.mirror_texels(faces, _grid_mirror())
    assert mirror is built.mirror_texels(faces.copy(), _grid_mirror())  # cached
    np.testing.assert_array_equal(mirror[mirror], np.arange(len(built.texels)))  # an involution here


# Photos of the template rendered with the project's renderer: its left half (+X, the
# subject's left) red, its right half blue, darker toward the chin, on a pure green background.
GREEN = np.array([0, 255, 0])


def _half_colours(topology) -> np.ndarray:
    vertices = topology.vertices
    colours = np.where(vertices[:, :1] > 0, [[0.85, 0.2, 0.15]], [[0.15, 0.25, 0.85]])
    return (colours * (0.55 + 0.45 * (vertices[:, 1:2] - vertices[:, 1].min()) / np.ptp(vertices[:, 1]))
            ).astype(np.float32)


def _render(topology, yaw_degrees: float, colours: np.ndarray, size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """-> photo (size, size, 3) uint8 of the template turned by yaw_degrees (nose toward the image's
    right) with per-vertex colours (V, 3) in [0, 1]; the exact image points (V, 3) of its vertices."""
    torch = pytest.importorskip("torch")
    from model.nn.renderer import render
    from tests.model.mesh.test_visibility import posed_points

    points = posed_points(topology, yaw_degrees, size)
    screen = torch.as_tensor(points, dtype=torch.float32)[None]
    out = render(screen, torch.as_tensor(topology.faces), torch.as_tensor(colours)[None],
                 torch.as_tensor(topology.regions), size, size)
    background = torch.as_tensor(GREEN / 255.0, dtype=torch.float32).view(1, 3, 1, 1)
    image = out.image * out.mask + background * (1 - out.mask)
    photo = np.ascontiguousarray((image[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
    return photo, points.astype(np.float32)


def _greenish(colours: np.ndarray) -> np.ndarray:
    colours = colours.astype(int)
    return (colours[..., 1] > colours[..., 0] + 40) & (colours[..., 1] > colours[..., 2] + 40)


@pytest.fixture(scope="module")
def face_uv_map(topology) -> UVRasterMap:
    return UVRasterMap.build(topology.uvs, topology.faces, 256)


@pytest.mark.parametrize("yaw", [35.0, 60.0])
def test_a_turned_face_colours_its_hidden_half_from_the_seen_half(topology, face_uv_map, yaw):
    colours = _half_colours(topology)
    photo, points = _render(topology, yaw, colours)
    seen = face_visibility(points, topology.faces, topology.mirror, topology.regions, (256, 256))
    vertex_colours = sample_vertex_colors(photo, seen.sample_points, seen)
    # the subject's left (red, +X) turned away: where unseen, the mirrored right half's blue
    hidden = (seen.weight == 0) & (seen.weight[topology.mirror] == 1)
    assert hidden.sum() > (600 if yaw < 45 else 1500)
    expected = colours[topology.mirror[hidden]] * 255
    assert np.percentile(np.abs(vertex_colours[hidden] - expected).max(axis=1), 95) < 20
    assert not _greenish(vertex_colours).any()
    plain_colours = sample_vertex_colors(photo, points[:, :2])
    assert _greenish(plain_colours).sum() > 100  # what sampling without visibility gives

    texture = bake_uv_texture(photo, seen.sample_points, topology.faces, face_uv_map, seen)
    covered = face_uv_map.face_index >= 0
    assert not _greenish(texture[covered]).any()
    hidden_faces = np.flatnonzero(hidden[topology.faces].all(axis=1))
    hidden_texels = np.isin(face_uv_map.face_index, hidden_faces)
    blue = texture[hidden_texels].astype(int)
    assert hidden_texels.sum() > 1000 and (blue[:, 2] > blue[:, 0] + 60).mean() > 0.97
    plain = bake_uv_texture(photo, points[:, :2], topology.faces, face_uv_map)
    assert _greenish(plain[hidden_texels]).mean() > 0.05 or (plain[hidden_texels, 2] < 120).mean() > 0.05


@pytest.mark.parametrize("yaw", [0.0, 40.0])
def test_rim_texels_never_read_the_background(topology, face_uv_map, yaw):
    photo, points = _render(topology, yaw, _half_colours(topology))
    seen = face_visibility(points, topology.faces, topology.mirror, topology.regions, (256, 256))
    rim_faces = np.flatnonzero((mesh_structure(topology.faces, topology.num_vertices).rim_ring == 0)[topology.faces]
                               .any(axis=1))
    rim_texels = np.isin(face_uv_map.face_index, rim_faces)
    assert rim_texels.sum() > 500
    texture = bake_uv_texture(photo, seen.sample_points, topology.faces, face_uv_map, seen)
    assert not _greenish(texture[rim_texels]).any()
    plain = bake_uv_texture(photo, points[:, :2], topology.faces, face_uv_map)
    assert _greenish(plain[rim_texels]).sum() > 50  # sampled where the mesh is, the rim reads the background


def test_a_frontal_face_keeps_its_colours_in_the_centre(topology, face_uv_map):
    # a symmetric face (colour by height and depth): where the sources blend, they agree
    vertices = topology.vertices
    colours = np.stack([0.5 + 0.4 * (vertices[:, 1] - vertices[:, 1].min()) / np.ptp(vertices[:, 1]),
                        0.3 + 0.5 * (vertices[:, 2] - vertices[:, 2].min()) / np.ptp(vertices[:, 2]),
                        np.full(len(vertices), 0.35)], axis=1).astype(np.float32)
    photo, points = _render(topology, 0.0, colours)
    seen = face_visibility(points, topology.faces, topology.mirror, topology.regions, (256, 256))
    central = (np.abs(vertices[:, 0]) < 0.3 * np.ptp(vertices[:, 0])) & (
        np.arange(topology.num_vertices) < topology.num_surface_vertices)
    plain = sample_vertex_colors(photo, points[:, :2]).astype(int)
    vertex_colours = sample_vertex_colors(photo, seen.sample_points, seen).astype(int)
    difference = np.abs(vertex_colours - plain).max(axis=1)
    assert np.percentile(difference[central], 95) <= 6
    # fully seen vertices keep exactly their own sample (at the rim, read a little inward)
    fully_seen = central & (seen.weight == 1)
    assert fully_seen.sum() > 0.6 * central.sum()
    own_samples = sample_vertex_colors(photo, seen.sample_points).astype(int)
    np.testing.assert_array_equal(vertex_colours[fully_seen], own_samples[fully_seen])
    texture = bake_uv_texture(photo, seen.sample_points, topology.faces, face_uv_map, seen).astype(int)
    plain_texture = bake_uv_texture(photo, points[:, :2], topology.faces, face_uv_map).astype(int)
    central_texels = np.isin(face_uv_map.face_index, np.flatnonzero(central[topology.faces].all(axis=1)))
    texel_difference = np.abs(texture - plain_texture).max(axis=2)[central_texels]
    assert np.percentile(texel_difference, 95) <= 6


@pytest.fixture(scope="module")
def layout():
    from model.topology import FaceTopology

    topology = FaceTopology.load()
    return topology, UVRasterMap.build(topology.uvs, topology.faces, 64)


def _texel_centres(uv_map: UVRasterMap) -> tuple[np.ndarray, np.ndarray]:
    rows, cols = np.divmod(uv_map.texels, uv_map.size)
    return (cols + 0.5) / uv_map.size, 1.0 - (rows + 0.5) / uv_map.size


def test_bake_vertex_texture_interpolates_vertex_colours_over_the_layout(layout):
    topology, uv_map = layout
    # colours linear in (u, v): barycentric interpolation reproduces them exactly at every texel centre
    colours = np.column_stack([topology.uvs, np.full(len(topology.uvs), 0.5)]).astype(np.float32)
    texture = bake_vertex_texture(colours, topology.faces, uv_map)
    assert texture.shape == (64, 64, 3) and texture.dtype == np.uint8
    u, v = _texel_centres(uv_map)
    covered = texture.reshape(-1, 3)[uv_map.texels].astype(float)
    assert np.abs(covered[:, 0] - 255 * u).max() <= 1.0 and np.abs(covered[:, 1] - 255 * v).max() <= 1.0
    assert np.abs(covered[:, 2] - 127.5).max() <= 1.0
    # uint8 colours are taken as they are
    as_bytes = bake_vertex_texture(np.rint(colours * 255).astype(np.uint8), topology.faces, uv_map)
    assert np.abs(as_bytes.astype(int) - texture).max() <= 1
    ring = texture.reshape(-1, 3)[uv_map.ring_texels]
    np.testing.assert_array_equal(ring, texture.reshape(-1, 3)[uv_map.ring_sources])
    with pytest.raises(ValueError, match="colors"):
        bake_vertex_texture(colours[:, :2], topology.faces, uv_map)


def test_merged_vertex_colours_follow_the_weights():
    red, blue = np.full((4, 3), [200, 0, 0], np.uint8), np.full((4, 3), [0, 0, 200], np.uint8)
    weights = [np.array([1.0, 0.0, 0.0, 0.5]), np.array([0.0, 1.0, 0.0, 0.5])]
    merged = merge_vertex_colors([red, blue], weights).astype(int)
    assert merged[0].tolist() == [200, 0, 0] and merged[1].tolist() == [0, 0, 200]
    assert merged[2].tolist() == merged[3].tolist() == [100, 0, 100]  # nobody saw it / both alike: the mean
    with pytest.raises(ValueError, match="one weight array per photo"):
        merge_vertex_colors([red], weights)


def test_merged_uv_texture_takes_each_part_from_the_photo_that_saw_it(layout):
    topology, uv_map = layout
    left = topology.vertices[:, 0] > 0  # +X: the subject's left
    red, blue = np.zeros((64, 64, 3), np.uint8), np.zeros((64, 64, 3), np.uint8)
    red[..., 0], blue[..., 2] = 200, 200
    merged = merge_uv_textures([red, blue], [left.astype(float), (~left).astype(float)], topology.faces, uv_map)
    texel_vertices = topology.faces[uv_map.texel_faces]  # (N, 3)
    only_left, only_right = left[texel_vertices].all(axis=1), (~left)[texel_vertices].all(axis=1)
    covered = merged.reshape(-1, 3)[uv_map.texels].astype(int)
    assert only_left.sum() > 100 and only_right.sum() > 100
    assert (covered[only_left, 0] >= 199).all() and (covered[only_left, 2] <= 1).all()
    assert (covered[only_right, 2] >= 199).all() and (covered[only_right, 0] <= 1).all()
