"""Differentiable triangle renderer in pure PyTorch (CPU and GPU).

Rasterise, then interpolate: the visible triangle of every pixel is found without gradients,
then the barycentric weights of the pixel centres are recomputed with autograd from the vertex
positions, so gradients reach both vertex positions and per-vertex attributes.

Rasterisation is vectorised over triangles. Triangles are grouped by the size of their
bounding box (rounded up to powers of two per axis); each group tests a dense grid of candidate
pixel centres against its triangles' edge functions, and a z-buffer keeps the nearest covering
triangle per pixel with ``scatter_reduce(amax)`` on an integer key packing depth and face id.

Screen space: x to the right and y downwards in pixels, pixel (i, j) centred at
(x, y) = (j + 0.5, i + 0.5); z larger means nearer the camera. No back-face culling.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

# Pixel centres this close outside an edge (in barycentric units) still count as covered, so a
# pixel centre on an edge shared by two triangles is never left empty.
_EDGE_TOLERANCE = 1e-5
# Triangles whose doubled area (in square pixels) is this small or smaller are skipped.
_MIN_DOUBLED_AREA = 1e-12
# At most this many candidate (triangle, pixel) pairs are tested at once, to bound memory.
_MAX_CANDIDATES = 1 << 22
_EMPTY_KEY = torch.iinfo(torch.int64).min
_LOW_32_BITS = 0xFFFFFFFF


@dataclass
class Fragments:
    """Per-pixel visibility.

    face_index (B, H, W) long: the visible triangle, -1 where empty.
    bary (B, H, W, 3): barycentric weights of the pixel centre in that triangle, zeros where
    empty; differentiable with respect to the screen vertices.
    """

    face_index: torch.Tensor
    bary: torch.Tensor

    @property
    def mask(self) -> torch.Tensor:
        """(B, H, W) bool: a triangle covers the pixel."""
        return self.face_index >= 0


@dataclass
class RenderOutput:
    """image (B, C, H, W); mask (B, 1, H, W) float; region_map (B, H, W) long, -1 where empty."""

    image: torch.Tensor
    mask: torch.Tensor
    region_map: torch.Tensor
    fragments: Fragments


def _doubled_area(x0: torch.Tensor, y0: torch.Tensor, x1: torch.Tensor, y1: torch.Tensor,
                  x2: torch.Tensor, y2: torch.Tensor) -> torch.Tensor:
    """Twice the signed area of triangles (0, 1, 2), elementwise. Rasterisation and the
    differentiable barycentrics both use this exact expression, so they agree bit for bit on
    which triangles are degenerate."""
    return (x1 - x0) * (y2 - y0) - (y1 - y0) * (x2 - x0)


def _depth_key(depth: torch.Tensor) -> torch.Tensor:
    """Depths (N,) -> int64 keys (N,) ordered like the float32 depths, low 32 bits zero."""
    bits = depth.to(torch.float32).view(torch.int32).to(torch.int64)
    ordered = torch.where(bits < 0, -(bits & 0x7FFFFFFF), bits)
    return ordered << 32


def _ceil_log2(values: torch.Tensor) -> torch.Tensor:
    """Integers >= 1 (N,) -> ceil(log2(value)) (N,) long."""
    return torch.frexp((values - 1).to(torch.float32)).exponent.long()


@dataclass
class _TriangleSetup:
    """Per-triangle rasterisation data for B * F triangles (index b * F + f).

    planes (12, B * F): barycentric weights w0, w1, w2 at the first candidate pixel centre of
    the bounding box, their steps per pixel in x, then in y, then depth at that centre and its
    steps in x and y. origin (B * F,) long: flat pixel index (b * H + i) * W + j of that first
    candidate. box_width, box_height (B * F,) long: candidate pixels per row and column, 0 for
    triangles that can cover no pixel centre.
    """

    planes: torch.Tensor
    origin: torch.Tensor
    box_width: torch.Tensor
    box_height: torch.Tensor


def _setup_triangles(screen_vertices: torch.Tensor, faces: torch.Tensor, height: int, width: int) -> _TriangleSetup:
    """screen_vertices (B, V, 3) (no gradient needed), faces (F, 3) -> :class:`_TriangleSetup`."""
    batch = screen_vertices.shape[0]
    coords = screen_vertices.permute(2, 0, 1)[:, :, faces]  # (3, B, F, 3)
    (x0, x1, x2), (y0, y1, y2), (z0, z1, z2) = (c.reshape(-1, 3).T.contiguous() for c in coords)
    area = _doubled_area(x0, y0, x1, y1, x2, y2)
    usable = (area.abs() > _MIN_DOUBLED_AREA) & torch.isfinite(area)
    x_lo = torch.minimum(torch.minimum(x0, x1), x2)
    x_hi = torch.maximum(torch.maximum(x0, x1), x2)
    y_lo = torch.minimum(torch.minimum(y0, y1), y2)
    y_hi = torch.maximum(torch.maximum(y0, y1), y2)
    # First and last pixel centres inside the box, clipped to the image.
    j0 = torch.ceil(x_lo - 0.5).clamp(0, width)
    j1 = torch.floor(x_hi - 0.5).clamp(-1, width - 1)
    i0 = torch.ceil(y_lo - 0.5).clamp(0, height)
    i1 = torch.floor(y_hi - 0.5).clamp(-1, height - 1)
    box_width = torch.where(usable, (j1 - j0 + 1).clamp(min=0), 0).long()
    box_height = torch.where(usable, (i1 - i0 + 1).clamp(min=0), 0).long()
    inverse = 1.0 / torch.where(usable, area, 1.0)
    px, py = j0 + 0.5, i0 + 0.5
    # w_k(p) = E(v_{k+1}, v_{k+2}, p) / area with E(a, b, p) = (bx - ax)(py - ay) - (by - ay)(px - ax).
    w0 = ((x2 - x1) * (py - y1) - (y2 - y1) * (px - x1)) * inverse
    w1 = ((x0 - x2) * (py - y2) - (y0 - y2) * (px - x2)) * inverse
    w2 = ((x1 - x0) * (py - y0) - (y1 - y0) * (px - x0)) * inverse
    step_x = [(y1 - y2) * inverse, (y2 - y0) * inverse, (y0 - y1) * inverse]
    step_y = [(x2 - x1) * inverse, (x0 - x2) * inverse, (x1 - x0) * inverse]
    depth = w0 * z0 + w1 * z1 + w2 * z2
    depth_x = step_x[0] * z0 + step_x[1] * z1 + step_x[2] * z2
    depth_y = step_y[0] * z0 + step_y[1] * z1 + step_y[2] * z2
    planes = torch.stack([w0, w1, w2, *step_x, *step_y, depth, depth_x, depth_y])
    image = torch.arange(batch, device=faces.device).repeat_interleave(faces.shape[0])
    origin = (image * height + i0.long().clamp(max=height - 1)) * width + j0.long().clamp(max=width - 1)
    return _TriangleSetup(planes=planes, origin=origin, box_width=box_width, box_height=box_height)


def _scan_group(setup: _TriangleSetup, triangles: torch.Tensor, grid_width: int, grid_height: int,
                num_faces: int, width: int, zbuffer: torch.Tensor) -> None:
    """Z-buffer the triangles (T,) whose boxes fit a grid_width x grid_height grid of pixels."""
    planes = setup.planes.index_select(1, triangles)[:, :, None]  # (12, T, 1)
    slots = torch.arange(grid_width * grid_height, device=triangles.device)
    dx, dy = slots % grid_width, slots // grid_width
    fx, fy = dx.to(planes.dtype), dy.to(planes.dtype)
    covered = None
    for k in range(3):
        inside = planes[k] + planes[3 + k] * fx + planes[6 + k] * fy >= -_EDGE_TOLERANCE  # (T, K)
        covered = inside if covered is None else covered & inside
    if grid_width > 1:
        covered &= dx < setup.box_width.index_select(0, triangles)[:, None]
    if grid_height > 1:
        covered &= dy < setup.box_height.index_select(0, triangles)[:, None]
    hits = covered.view(-1).nonzero().squeeze(1)
    triangle, slot = hits // slots.numel(), hits % slots.numel()
    depth = (planes[9] + planes[10] * fx + planes[11] * fy).view(-1)[hits]
    pixel = setup.origin.index_select(0, triangles)[triangle] + dy[slot] * width + dx[slot]
    face = triangles[triangle] % num_faces
    zbuffer.scatter_reduce_(0, pixel, _depth_key(depth) | face, reduce="amax")


@torch.no_grad()
def _visible_faces(screen_vertices: torch.Tensor, faces: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """screen_vertices (B, V, 3), faces (F, 3) -> face index per pixel (B * H * W,) long, -1 where empty."""
    batch, num_faces = screen_vertices.shape[0], faces.shape[0]
    setup = _setup_triangles(screen_vertices.detach(), faces, height, width)
    zbuffer = torch.full((batch * height * width,), _EMPTY_KEY, dtype=torch.int64, device=faces.device)
    # Group by bounding box size, rounded up to powers of two per axis (and at most the image).
    has_pixels = (setup.box_width > 0) & (setup.box_height > 0)
    log_w, log_h = _ceil_log2(setup.box_width.clamp(min=1)), _ceil_log2(setup.box_height.clamp(min=1))
    num_codes = 64 * 64
    group = torch.where(has_pixels, log_w * 64 + log_h, num_codes)
    order = torch.argsort(group)
    counts = torch.bincount(group, minlength=num_codes + 1)[:num_codes].tolist()
    start = 0
    for code, count in enumerate(counts):
        if count == 0:
            continue
        grid_width, grid_height = min(1 << (code // 64), width), min(1 << (code % 64), height)
        chunk = max(1, _MAX_CANDIDATES // (grid_width * grid_height))
        for first in range(start, start + count, chunk):
            triangles = order[first:min(first + chunk, start + count)]
            _scan_group(setup, triangles, grid_width, grid_height, num_faces, width, zbuffer)
        start += count
    return torch.where(zbuffer == _EMPTY_KEY, -1, zbuffer & _LOW_32_BITS)


def rasterize(screen_vertices: torch.Tensor, faces: torch.Tensor, height: int, width: int) -> Fragments:
    """Visible triangle and barycentric weights of every pixel.

    screen_vertices (B, V, 3), faces (F, 3) long -> :class:`Fragments` with (B, H, W) maps. The
    nearest covering triangle wins (larger z is nearer; equal depths go to the larger face
    index); ``bary`` is differentiable with respect to ``screen_vertices``.
    """
    batch, num_vertices, _ = screen_vertices.shape
    faces = faces.to(screen_vertices.device)
    face_index = _visible_faces(screen_vertices, faces, height, width)
    pixels = (face_index >= 0).nonzero().squeeze(1)  # (N,)
    image = pixels // (height * width)
    corners = faces[face_index[pixels]] + (image * num_vertices)[:, None]  # (N, 3)
    plane = screen_vertices.reshape(batch * num_vertices, 3).T[:2]  # (2, B * V)
    (x0, x1, x2), (y0, y1, y2) = plane.index_select(1, corners.T.reshape(-1)).view(2, 3, -1)
    px = (pixels % width).to(screen_vertices.dtype) + 0.5
    py = (pixels // width % height).to(screen_vertices.dtype) + 0.5
    area = _doubled_area(x0, y0, x1, y1, x2, y2)
    w0 = ((x2 - x1) * (py - y1) - (y2 - y1) * (px - x1)) / area
    w1 = ((x0 - x2) * (py - y2) - (y0 - y2) * (px - x2)) / area
    weights = torch.stack([w0, w1, 1.0 - w0 - w1], dim=1)
    bary = screen_vertices.new_zeros(batch * height * width, 3).index_copy(0, pixels, weights)
    return Fragments(face_index=face_index.view(batch, height, width), bary=bary.view(batch, height, width, 3))


def interpolate(attributes: torch.Tensor, faces: torch.Tensor, fragments: Fragments) -> torch.Tensor:
    """Per-vertex attributes (B, V, C) -> per-pixel (B, H, W, C), zeros where empty.

    Differentiable with respect to ``attributes`` and, through ``fragments.bary``, the screen
    vertices.
    """
    batch, num_vertices, channels = attributes.shape
    _, height, width = fragments.face_index.shape
    face_index = fragments.face_index.reshape(-1)
    pixels = (face_index >= 0).nonzero().squeeze(1)  # (N,)
    image = pixels // (height * width)
    corners = faces.to(attributes.device)[face_index[pixels]] + (image * num_vertices)[:, None]  # (N, 3)
    values = attributes.reshape(batch * num_vertices, channels).index_select(0, corners.reshape(-1))
    weights = fragments.bary.reshape(-1, 3).index_select(0, pixels)
    shaded = (values.view(-1, 3, channels) * weights[:, :, None]).sum(dim=1)
    out = attributes.new_zeros(batch * height * width, channels).index_copy(0, pixels, shaded)
    return out.view(batch, height, width, channels)


def render(screen_vertices: torch.Tensor, faces: torch.Tensor, vertex_attributes: torch.Tensor,
           vertex_regions: torch.Tensor, height: int, width: int) -> RenderOutput:
    """Rasterise and shade.

    screen_vertices (B, V, 3), faces (F, 3), vertex_attributes (B, V, C), vertex_regions (V,)
    long -> image (B, C, H, W), coverage mask, and the region label of each covered pixel (that
    of the triangle's corner with the largest barycentric weight).
    """
    fragments = rasterize(screen_vertices, faces, height, width)
    image = interpolate(vertex_attributes, faces, fragments).permute(0, 3, 1, 2)
    mask = fragments.mask
    faces = faces.to(screen_vertices.device)
    nearest_corner = fragments.bary.detach().argmax(dim=-1, keepdim=True)
    nearest_vertex = faces[fragments.face_index.clamp(min=0)].gather(-1, nearest_corner).squeeze(-1)
    regions = vertex_regions.to(screen_vertices.device)[nearest_vertex]
    region_map = torch.where(mask, regions, -1)
    return RenderOutput(image=image, mask=mask[:, None].to(vertex_attributes.dtype), region_map=region_map,
                        fragments=fragments)
