import math

import numpy as np
import pytest

from model.conventions import ndc_to_pixels
from model.mesh.structure import RIM_RINGS, mesh_structure
from model.mesh.visibility import (
    RIM_PULL,
    DepthBuffer,
    FaceVisibility,
    face_visibility,
    merge_weights,
    vertex_normals,
)


def posed_points(topology, yaw_degrees: float, size: int = 256, scale: float = 7.0) -> np.ndarray:
    """The template turned by ``yaw_degrees`` (positive: nose toward the image's right) and projected
    like the network's output: (V, 3) crop pixels x, y (down) and depth (larger nearer)."""
    yaw = math.radians(yaw_degrees)
    rotation = np.array([[math.cos(yaw), 0, math.sin(yaw)], [0, 1, 0], [-math.sin(yaw), 0, math.cos(yaw)]])
    return ndc_to_pixels(scale * topology.vertices.astype(np.float64) @ rotation.T, size)


def rendered_visible(topology, points: np.ndarray, size: int) -> np.ndarray:
    """(V,) bool: the vertex belongs to a triangle that the torch renderer shows at some pixel."""
    torch = pytest.importorskip("torch")
    from model.nn.renderer import rasterize

    fragments = rasterize(torch.as_tensor(points, dtype=torch.float32)[None], torch.as_tensor(topology.faces),
                          size, size)
    shown = fragments.face_index[0]
    visible = np.zeros(topology.num_vertices, bool)
    visible[topology.faces[torch.unique(shown[shown >= 0]).numpy()].ravel()] = True
    return visible


def grid_mesh(rows: int, cols: int, x0: float, y0: float, step: float, depth: float, start: int = 0):
    """A flat grid facing the camera in photo pixels: points (rows * cols, 3), faces counter-clockwise
    seen from the front (in (x, -y, depth)), vertex indices from ``start``."""
    r, c = np.mgrid[0:rows, 0:cols]
    points = np.stack([x0 + c.ravel() * step, y0 + r.ravel() * step, np.full(rows * cols, depth)], 1)
    idx = np.arange(rows * cols).reshape(rows, cols) + start
    a, b, d, e = idx[:-1, :-1].ravel(), idx[:-1, 1:].ravel(), idx[1:, 1:].ravel(), idx[1:, :-1].ravel()
    faces = np.concatenate([np.stack([a, d, b], 1), np.stack([a, e, d], 1)])
    return points.astype(np.float64), faces


def grid_mirror(rows: int, cols: int, start: int = 0) -> np.ndarray:
    idx = np.arange(rows * cols).reshape(rows, cols)
    return (idx[:, ::-1].ravel() + start).astype(np.int64)


def test_normals_point_toward_the_camera_on_a_frontal_face(topology):
    points = posed_points(topology, 0.0)
    normals = vertex_normals(points, topology.faces)
    np.testing.assert_allclose(np.linalg.norm(normals, axis=1), 1.0, atol=1e-5)
    nose_tip = int(np.argmax(topology.vertices[:, 2]))
    assert normals[nose_tip, 2] > 0.9
    surface = np.arange(topology.num_vertices) < topology.num_surface_vertices
    assert np.median(normals[surface, 2]) > 0.6
    # grids built counter-clockwise from the front face the camera too
    grid_points, grid_faces = grid_mesh(3, 3, 0, 0, 10, 5)
    np.testing.assert_allclose(vertex_normals(grid_points, grid_faces), [[0, 0, 1]] * 9, atol=1e-6)


def test_a_turned_face_hides_its_far_side(topology):
    size = 512
    points = posed_points(topology, 55.0, size)
    seen = face_visibility(points, topology.faces, topology.mirror, topology.regions, (size, size))
    assert seen.weight.shape == (topology.num_vertices,) and seen.weight.dtype == np.float32
    assert 0.0 <= seen.weight.min() and seen.weight.max() <= 1.0
    truly_visible = rendered_visible(topology, points, size)
    assert (~truly_visible).sum() > 1500
    assert (seen.weight[~truly_visible] < 0.5).mean() > 0.95
    assert (seen.weight[~truly_visible] == 0).mean() > 0.7
    normals = vertex_normals(points, topology.faces)[:, 2]
    squarely = truly_visible & (normals > 0.7)
    assert squarely.sum() > 1500 and (seen.weight[squarely] >= 0.5).mean() > 0.95
    assert (seen.weight[normals < -0.2] == 0).mean() > 0.9
    # the nose turns toward +X (the subject's left goes away from the camera)
    names = list(topology.region_names)
    surface = np.arange(topology.num_vertices) < topology.num_surface_vertices
    far, near = surface & (topology.regions == names.index("cheek_left")), surface & (
        topology.regions == names.index("cheek_right"))
    assert np.median(seen.weight[far]) == 0.0 and np.median(seen.weight[near]) == 1.0
    assert (seen.visible == (seen.weight >= 0.5)).all()


def test_a_frontal_face_is_seen_in_its_centre(topology):
    size = 256
    points = posed_points(topology, 0.0, size)
    seen = face_visibility(points, topology.faces, topology.mirror, topology.regions, (size, size))
    centre = np.abs(topology.vertices[:, 0]) < 0.3 * np.ptp(topology.vertices[:, 0])
    centre &= np.arange(topology.num_vertices) < topology.num_surface_vertices
    assert (seen.weight[centre] >= 0.5).mean() > 0.9
    names = list(topology.region_names)
    smooth_skin = centre & np.isin(topology.regions, [names.index(name) for name in (
        "forehead", "brow_left", "brow_right", "cheek_left", "cheek_right")])
    assert (seen.weight[smooth_skin] == 1.0).mean() > 0.85
    # left and right are seen alike (up to the z-buffer's grid)
    asymmetry = np.abs(seen.weight - seen.weight[topology.mirror])
    assert asymmetry.mean() < 0.03 and np.percentile(asymmetry, 95) < 0.2


def test_an_occluder_hides_what_lies_behind_it():
    back, back_faces = grid_mesh(25, 25, 0, 0, 4, depth=0.0)  # 0 .. 96 pixels
    front, front_faces = grid_mesh(5, 5, 40, 40, 4, depth=50.0, start=len(back))  # 40 .. 56
    points = np.concatenate([back, front])
    faces = np.concatenate([back_faces, front_faces])
    mirror = np.concatenate([grid_mirror(25, 25), grid_mirror(5, 5, start=len(back))])
    seen = face_visibility(points, faces, mirror)
    back_weight = seen.weight[: len(back)]
    x, y = back[:, 0] / 4, back[:, 1] / 4  # in rings
    behind = (x > 10) & (x < 14) & (y > 10) & (y < 14)
    assert behind.sum() == 9 and (back_weight[behind] == 0).all()
    from_outline = np.minimum(np.minimum(x, 24 - x), np.minimum(y, 24 - y))
    from_occluder = np.maximum(np.maximum(10 - x, x - 14), np.maximum(10 - y, y - 14))
    clear = (from_outline >= 5) & (from_occluder >= 5)
    assert clear.sum() > 40 and (back_weight[clear] == 1.0).all()
    beside = np.isin(x, [8, 9, 15, 16]) & (y >= 11) & (y <= 13)
    beside |= np.isin(y, [8, 9, 15, 16]) & (x >= 11) & (x <= 13)
    assert beside.sum() == 24 and (back_weight[beside] < 1.0).all()  # blends in toward what is hidden
    assert (seen.weight[len(back):] == 1.0).all()  # the occluder itself is in full view
    # without the occluder everything off the outline is seen
    alone = face_visibility(back, back_faces, grid_mirror(25, 25))
    assert (alone.weight[from_outline >= 5] == 1.0).all()


def test_turned_away_surfaces_are_not_seen():
    points, faces = grid_mesh(6, 6, 0, 0, 10, depth=0.0)
    seen = face_visibility(points, faces[:, ::-1], grid_mirror(6, 6))  # clockwise: facing away
    assert (seen.weight == 0).all()
    # tilted past grazing (88 degrees: depth falls tan(88) pixels per pixel to the right) is not seen
    tilted = points.copy()
    tilted[:, 2] = -tilted[:, 0] * math.tan(math.radians(88.0))
    assert (face_visibility(tilted, faces, grid_mirror(6, 6)).weight == 0).all()


def test_vertices_off_the_photo_are_not_seen():
    points, faces = grid_mesh(41, 41, -40, 0, 2.5, depth=0.0)  # x from -40 to 60, y from 0 to 100
    x, y = points[:, 0], points[:, 1]
    seen = face_visibility(points, faces, grid_mirror(41, 41), image_size=(100, 100))
    assert (seen.weight[x <= 0] == 0).all()
    inside = (x >= 15) & (x <= 45) & (y >= 15) & (y <= 85)  # 6 rings from the photo's edge and the outline
    assert inside.sum() > 100 and (seen.weight[inside] == 1.0).all()
    # no image size: no such test
    unbounded = face_visibility(points, faces, grid_mirror(41, 41))
    assert (unbounded.weight[(x >= -25) & (x <= -15) & (y >= 15) & (y <= 85)] == 1.0).all()


def test_the_outer_rim_samples_inward_and_holes_are_not_rims():
    points, faces = grid_mesh(13, 13, 0, 0, 10, depth=0.0)
    # punch a hole: drop the triangles around the centre vertex's 2 x 2 quads
    centre_vertex = 6 * 13 + 6
    holed = faces[~(faces == centre_vertex).any(axis=1)]
    structure = mesh_structure(holed, len(points))
    ring = structure.rim_ring.reshape(13, 13)
    assert (ring[0] == 0).all() and (ring[:, -1] == 0).all() and ring[1, 1] == 1 and ring[2, 3] == 2
    assert ring[6, 6] == RIM_RINGS and ring[5, 5] == RIM_RINGS  # the hole's edge is no rim
    seen = face_visibility(points, holed, grid_mirror(13, 13))
    centre = points[:, :2].mean(axis=0)
    corner = points[0, :2]
    np.testing.assert_allclose(seen.sample_points[0], corner + RIM_PULL * (centre - corner), atol=1e-4)
    pulled = np.linalg.norm(seen.sample_points - points[:, :2], axis=1)
    assert (pulled[ring.ravel() >= RIM_RINGS] == 0).all()
    # less with every ring inward
    assert pulled.reshape(13, 13)[6, 0] > pulled.reshape(13, 13)[6, 1] > pulled.reshape(13, 13)[6, 2] > 0


def test_depth_buffer_holds_the_nearest_surface():
    # a tilted triangle over a flat one: the buffer is the tilted plane where it is in front
    points = np.array([[0, 0, 0], [64, 0, 0], [0, 64, 0], [0, 0, 10], [64, 0, -30], [0, 64, 10]], np.float64)
    faces = np.array([[0, 2, 1], [3, 5, 4]])
    buffer = DepthBuffer.render(points, faces, grid=16)
    assert buffer.depth.shape == (16, 16) and buffer.cell == 4.0
    rows, cols = np.nonzero(np.isfinite(buffer.depth))
    tilted = 10 - 40 * (buffer.origin_x + (cols + 0.5) * buffer.cell) / 64
    np.testing.assert_allclose(buffer.depth[rows, cols], np.maximum(tilted, 0.0), atol=1e-3)
    assert not np.isfinite(buffer.depth[15, 15])  # past the hypotenuse
    assert len(rows) == (np.add.outer(np.arange(16), np.arange(16)) <= 15).sum()  # centres x + y <= 64


def test_odd_input_does_not_break_it():
    points, faces = grid_mesh(5, 5, 0, 0, 10, 0)
    points[3] = np.nan
    seen = face_visibility(points, faces, grid_mirror(5, 5))
    assert np.isfinite(seen.weight).all() and seen.weight[3] == 0 and np.isfinite(seen.sample_points).all()
    collapsed = face_visibility(np.zeros((25, 3)), faces, grid_mirror(5, 5))
    assert (collapsed.weight == 0).all()
    with pytest.raises(ValueError, match="mirror"):
        face_visibility(points, faces, np.arange(3))
    with pytest.raises(ValueError, match="image_points"):
        face_visibility(points[:, :2], faces, grid_mirror(5, 5))


def test_extra_vertices_and_triangles_are_handled_generically(topology):
    # a topology grown by an inner surface (as a future mouth might be): a copy of a cheek pushed back
    names = list(topology.region_names)
    cheek = np.flatnonzero(topology.regions == names.index("cheek_right"))
    extra = topology.num_vertices + np.arange(len(cheek))
    remap = np.full(topology.num_vertices, -1)
    remap[cheek] = extra
    inner_faces = remap[topology.faces[np.isin(topology.faces, cheek).all(axis=1)]]
    points = posed_points(topology, 20.0)
    all_points = np.concatenate([points, points[cheek] - [0.0, 0.0, 40.0]])  # 40 pixels (5 cm) behind the cheek
    faces = np.concatenate([topology.faces, inner_faces])
    mirror = np.concatenate([topology.mirror, np.arange(len(cheek)) + topology.num_vertices])
    groups = np.concatenate([topology.regions, np.full(len(cheek), names.index("mouth"))])
    seen = face_visibility(all_points, faces, mirror, groups, (256, 256))
    assert isinstance(seen, FaceVisibility) and seen.weight.shape == (len(all_points),)
    assert seen.sample_points.shape == (len(all_points), 2)
    assert seen.weight[topology.num_vertices:].max() == 0.0  # behind the cheek: hidden
    assert np.median(seen.weight[cheek]) == 1.0


def test_merge_weights_favour_the_photo_that_faced_a_part_squarely(topology):
    frontal, turned = posed_points(topology, 0.0), posed_points(topology, 40.0)
    weights = []
    for points in (frontal, turned):
        seen = face_visibility(points, topology.faces, topology.mirror, topology.regions)
        weight = merge_weights(seen, points, topology.faces)
        assert weight.shape == (topology.num_vertices,) and weight.dtype == np.float32
        assert (weight >= 0).all() and (weight <= seen.weight + 1e-6).all()
        cosine = vertex_normals(points, topology.faces)[:, 2]
        np.testing.assert_allclose(weight, seen.weight * np.clip(cosine, 0, 1), atol=1e-5)
        weights.append(weight)
    nose_tip = int(np.argmax(topology.vertices[:, 2]))
    assert weights[0][nose_tip] > weights[1][nose_tip] > 0


def test_depth_buffer_is_the_nearest_triangle_at_each_cell_centre(topology):
    # every triangle against every cell centre, in plain numpy: the same cells covered, the same depths
    points = posed_points(topology, 30.0)
    buffer = DepthBuffer.render(points, topology.faces, grid=12)
    height, width = buffer.depth.shape
    rows, cols = np.mgrid[0:height, 0:width]
    centre_x = buffer.origin_x + (cols.ravel() + 0.5) * buffer.cell
    centre_y = buffer.origin_y + (rows.ravel() + 0.5) * buffer.cell
    corners = points[topology.faces]  # (F, 3, 3)
    (xa, xb, xc), (ya, yb, yc), (za, zb, zc) = (corners[:, :, k].T[:, :, None] for k in range(3))
    area2 = (xb - xa) * (yc - ya) - (xc - xa) * (yb - ya)
    weight_a = ((xc - xb) * (centre_y - yb) - (yc - yb) * (centre_x - xb)) / area2
    weight_b = ((xa - xc) * (centre_y - yc) - (ya - yc) * (centre_x - xc)) / area2
    weight_c = 1.0 - weight_a - weight_b
    inside = (weight_a >= -1e-6) & (weight_b >= -1e-6) & (weight_c >= -1e-6)
    nearest = np.where(inside, weight_a * za + weight_b * zb + weight_c * zc, -np.inf).max(axis=0)
    covered = np.isfinite(buffer.depth.ravel())
    on_edge = (inside & ((np.abs(weight_a) < 1e-4) | (np.abs(weight_b) < 1e-4) | (np.abs(weight_c) < 1e-4))).any(0)
    assert covered.sum() > 60 and ((covered == np.isfinite(nearest)) | on_edge).all()
    both = covered & np.isfinite(nearest)
    np.testing.assert_allclose(buffer.depth.ravel()[both], nearest[both], atol=1e-3 * np.ptp(points[:, 2]))
