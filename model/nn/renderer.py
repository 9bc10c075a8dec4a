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
from functools import cached_property

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
# Bounding box groups are coded log2(grid width) * _GROUP_BASE + log2(grid height).
_GROUP_BASE = 32
_EMPTY_GROUP = _GROUP_BASE * _GROUP_BASE


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

    @cached_property
    def covered_pixels(self) -> torch.Tensor:
        """(N,) long: flat indices (b * H + i) * W + j of the covered pixels, ascending."""
        return (self.face_index.reshape(-1) >= 0).nonzero().squeeze(1)


@dataclass
class RenderOutput:
    """image (B, C, H, W); mask (B, 1, H, W) float; region_map (B, H, W) long, -1 where empty."""

    image: torch.Tensor
    mask: torch.Tensor
    region_map: torch.Tensor
    fragments: Fragments


@dataclass
class _Edges:
    """Edge vectors of triangles (v0, v1, v2), elementwise over any shape.

    Edge k runs from vertex k + 1 to vertex k + 2 (indices mod 3), so the barycentric weight of
    vertex k at p is (ex_k * (py - y_{k+1}) - ey_k * (px - x_{k+1})) / doubled_area.
    """

    ex: tuple[torch.Tensor, torch.Tensor, torch.Tensor]
    ey: tuple[torch.Tensor, torch.Tensor, torch.Tensor]
    doubled_area: torch.Tensor

    @classmethod
    def of(cls, x: tuple[torch.Tensor, ...], y: tuple[torch.Tensor, ...]) -> _Edges:
        """Corner coordinates x = (x0, x1, x2), y = (y0, y1, y2). Rasterisation and the
        differentiable barycentrics both use this, so they agree bit for bit on the areas."""
        ex = (x[2] - x[1], x[0] - x[2], x[1] - x[0])
        ey = (y[2] - y[1], y[0] - y[2], y[1] - y[0])
        return cls(ex=ex, ey=ey, doubled_area=ey[2] * ex[1] - ex[2] * ey[1])


def _depth_key(depth: torch.Tensor) -> torch.Tensor:
    """Depths (N,) -> int64 keys (N,) ordered like the float32 depths, low 32 bits zero."""
    bits = depth.to(torch.float32).view(torch.int32).to(torch.int64)
    ordered = torch.where(bits < 0, -(bits & 0x7FFFFFFF), bits)
    return ordered << 32


def _group_codes(height: int, width: int, device: torch.device) -> torch.Tensor:
    """(W + 1, H + 1) int16 table: bounding box of w x h pixels -> its group,
    ceil(log2(w)) * _GROUP_BASE + ceil(log2(h)), or _EMPTY_GROUP when w or h is 0."""
    sizes = torch.arange(max(height, width) + 1, device=device)
    log = torch.frexp((sizes - 1).clamp(min=0).to(torch.float32)).exponent.long()  # ceil(log2(size))
    codes = log[:width + 1, None] * _GROUP_BASE + log[None, :height + 1]
    codes[0, :] = codes[:, 0] = _EMPTY_GROUP
    return codes.to(torch.int16)


@dataclass
class _TriangleSetup:
    """Rasterisation data of B * F triangles (index b * F + f).

    planes (12, B * F): barycentric weights w0, w1, w2 and depth at the first candidate pixel
    centre of the bounding box (rows 0-3), their steps per pixel in x (rows 4-7) and in y
    (rows 8-11). origin (B * F,) long: flat pixel index (b * H + i) * W + j of that first
    candidate. box_width, box_height (B * F,) long: candidate pixels per row and column, 0 for
    triangles that can cover no pixel centre.
    """

    planes: torch.Tensor
    origin: torch.Tensor
    box_width: torch.Tensor
    box_height: torch.Tensor


def _setup_triangles(screen_vertices: torch.Tensor, faces: torch.Tensor, height: int, width: int) -> _TriangleSetup:
    """screen_vertices (B, V, 3) (no gradient needed), faces (F, 3) -> :class:`_TriangleSetup`."""
    batch, num_vertices, _ = screen_vertices.shape
    num_faces = faces.shape[0]
    table = screen_vertices.permute(2, 0, 1).reshape(3, batch * num_vertices)
    offsets = torch.arange(0, batch * num_vertices, num_vertices, device=faces.device)
    corner_ids = faces.T.reshape(1, -1) + offsets[:, None]  # (B, 3F)
    by_corner = table.index_select(1, corner_ids.view(-1)).view(3, batch, 3, num_faces)
    x, y, z = (c.unbind(1) for c in by_corner)  # corners of (B, F) each
    edges = _Edges.of(x, y)
    area = edges.doubled_area
    usable = (area.abs() > _MIN_DOUBLED_AREA) & torch.isfinite(area)
    # First and last pixel centres inside the box, clipped to the image.
    j0 = torch.ceil(torch.minimum(torch.minimum(x[0], x[1]), x[2]) - 0.5).clamp_(0, width)
    j1 = torch.floor(torch.maximum(torch.maximum(x[0], x[1]), x[2]) - 0.5).clamp_(-1, width - 1)
    i0 = torch.ceil(torch.minimum(torch.minimum(y[0], y[1]), y[2]) - 0.5).clamp_(0, height)
    i1 = torch.floor(torch.maximum(torch.maximum(y[0], y[1]), y[2]) - 0.5).clamp_(-1, height - 1)
    box_width = torch.where(usable, j1 - j0 + 1, 0).clamp_(min=0).long().view(-1)
    box_height = torch.where(usable, i1 - i0 + 1, 0).clamp_(min=0).long().view(-1)
    inverse = torch.where(usable, area, 1.0).reciprocal_()
    px, py = j0 + 0.5, i0 + 0.5
    planes = area.new_empty(12, batch, num_faces)
    for k in range(3):
        following = (k + 1) % 3
        weight = edges.ex[k] * (py - y[following]) - edges.ey[k] * (px - x[following])
        torch.mul(weight, inverse, out=planes[k])
        torch.mul(edges.ey[k], -inverse, out=planes[4 + k])
        torch.mul(edges.ex[k], inverse, out=planes[8 + k])
    for row in (0, 4, 8):  # depth (or its step) = sum over corners of weight (or its step) * z
        depth = torch.mul(planes[row], z[0], out=planes[row + 3])
        depth.addcmul_(planes[row + 1], z[1]).addcmul_(planes[row + 2], z[2])
    image = torch.arange(batch, device=faces.device)[:, None]
    origin = (image * height + i0.long().clamp_(max=height - 1)) * width + j0.long().clamp_(max=width - 1)
    return _TriangleSetup(planes=planes.view(12, -1), origin=origin.view(-1), box_width=box_width,
                          box_height=box_height)


def _scan_group(setup: _TriangleSetup, triangles: torch.Tensor, log_width: int, log_height: int,
                num_faces: int, width: int, zbuffer: torch.Tensor) -> None:
    """Z-buffer the triangles (T,) whose boxes fit a 2**log_width x 2**log_height pixel grid."""
    grid_width, log_slots = 1 << log_width, log_width + log_height
    planes = setup.planes.index_select(1, triangles)[:, :, None]  # (12, T, 1)
    slots = torch.arange(1 << log_slots, device=triangles.device)
    dx, dy = slots & (grid_width - 1), slots >> log_width
    fx, fy = dx.to(planes.dtype), dy.to(planes.dtype)

    def plane(row: int) -> torch.Tensor:
        """Value (T, K) of planes[row] (or (T, 1) for a one-pixel grid) at the candidates."""
        value = planes[row]
        if log_width > 0:
            value = value + planes[row + 4] * fx
        if log_height > 0:
            value = value + planes[row + 8] * fy
        return value

    covered = plane(0) >= -_EDGE_TOLERANCE  # (T, K)
    for k in (1, 2):
        covered &= plane(k) >= -_EDGE_TOLERANCE
    if log_width > 0:
        covered &= dx < setup.box_width.index_select(0, triangles)[:, None]
    if log_height > 0:
        covered &= dy < setup.box_height.index_select(0, triangles)[:, None]
    hits = covered.view(-1).nonzero().squeeze(1)
    triangle, slot = hits >> log_slots, hits & ((1 << log_slots) - 1)
    depth = plane(3).reshape(-1)[hits]
    pixel = setup.origin.index_select(0, triangles)[triangle] + (dy * width + dx)[slot]
    face = (triangles % num_faces)[triangle]
    zbuffer.scatter_reduce_(0, pixel, _depth_key(depth) | face, reduce="amax")


@torch.no_grad()
def _visible_faces(screen_vertices: torch.Tensor, faces: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """screen_vertices (B, V, 3), faces (F, 3) -> face index per pixel (B * H * W,) long, -1 where empty."""
    batch, num_faces = screen_vertices.shape[0], faces.shape[0]
    setup = _setup_triangles(screen_vertices.detach(), faces, height, width)
    zbuffer = torch.full((batch * height * width,), _EMPTY_KEY, dtype=torch.int64, device=faces.device)
    # Group triangles by bounding box size rounded up to powers of two per axis; the stable
    # sort keeps each group in triangle order, which keeps memory access local.
    group = _group_codes(height, width, faces.device)[setup.box_width, setup.box_height]
    order = torch.argsort(group, stable=True)
    counts = torch.bincount(group, minlength=_EMPTY_GROUP + 1)[:_EMPTY_GROUP].tolist()
    start = 0
    for code, count in enumerate(counts):
        if count == 0:
            continue
        log_width, log_height = divmod(code, _GROUP_BASE)
        chunk = max(1, _MAX_CANDIDATES >> (log_width + log_height))
        for first in range(start, start + count, chunk):
            triangles = order[first:min(first + chunk, start + count)]
            _scan_group(setup, triangles, log_width, log_height, num_faces, width, zbuffer)
        start += count
    return torch.where(zbuffer == _EMPTY_KEY, -1, zbuffer & _LOW_32_BITS)


def _corner_vertices(faces: torch.Tensor, face: torch.Tensor, image: torch.Tensor, num_vertices: int) -> torch.Tensor:
    """Faces (F, 3), face (N,) and batch element (N,) of N pixels -> (3, N) indices into the
    flattened (B * V) vertices of the corners."""
    return faces.T.contiguous().index_select(1, face) + image * num_vertices


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
    corners = _corner_vertices(faces, face_index[pixels], pixels // (height * width), num_vertices)
    plane = screen_vertices.reshape(batch * num_vertices, 3).T[:2]  # (2, B * V)
    x, y = plane.index_select(1, corners.view(-1)).view(2, 3, -1)  # (3, N) each
    edges = _Edges.of(tuple(x), tuple(y))
    px = (pixels % width).to(screen_vertices.dtype) + 0.5
    py = (pixels // width % height).to(screen_vertices.dtype) + 0.5
    w0 = (edges.ex[0] * (py - y[1]) - edges.ey[0] * (px - x[1])) / edges.doubled_area
    w1 = (edges.ex[1] * (py - y[2]) - edges.ey[1] * (px - x[2])) / edges.doubled_area
    weights = torch.stack([w0, w1, 1.0 - w0 - w1])  # (3, N)
    bary = screen_vertices.new_zeros(3, batch * height * width).index_copy(1, pixels, weights)
    return Fragments(face_index=face_index.view(batch, height, width),
                     bary=bary.view(3, batch, height, width).permute(1, 2, 3, 0))


def interpolate(attributes: torch.Tensor, faces: torch.Tensor, fragments: Fragments) -> torch.Tensor:
    """Per-vertex attributes (B, V, C) -> per-pixel (B, H, W, C), zeros where empty.

    Differentiable with respect to ``attributes`` and, through ``fragments.bary``, the screen
    vertices.
    """
    batch, num_vertices, channels = attributes.shape
    _, height, width = fragments.face_index.shape
    pixels = fragments.covered_pixels  # (N,)
    face = fragments.face_index.reshape(-1)[pixels]
    corners = _corner_vertices(faces.to(attributes.device), face, pixels // (height * width), num_vertices)
    table = attributes.reshape(batch * num_vertices, channels).T  # (C, B * V)
    values = table.index_select(1, corners.view(-1)).view(channels, 3, -1)  # (C, 3, N)
    weights = fragments.bary.permute(3, 0, 1, 2).reshape(3, -1).index_select(1, pixels)  # (3, N)
    shaded = (values * weights).sum(dim=1)  # (C, N)
    out = attributes.new_zeros(channels, batch * height * width).index_copy(1, pixels, shaded)
    return out.view(channels, batch, height, width).permute(1, 2, 3, 0)


def render(screen_vertices: torch.Tensor, faces: torch.Tensor, vertex_attributes: torch.Tensor,
           vertex_regions: torch.Tensor, height: int, width: int) -> RenderOutput:
    """Rasterise and shade.

    screen_vertices (B, V, 3), faces (F, 3), vertex_attributes (B, V, C), vertex_regions (V,)
    long -> image (B, C, H, W), coverage mask, and the region label of each covered pixel (that
    of the triangle's corner with the largest barycentric weight).
    """
    faces = faces.to(screen_vertices.device)
    fragments = rasterize(screen_vertices, faces, height, width)
    image = interpolate(vertex_attributes, faces, fragments).permute(0, 3, 1, 2)
    pixels = fragments.covered_pixels
    w0, w1, w2 = fragments.bary.detach().permute(3, 0, 1, 2).reshape(3, -1).index_select(1, pixels)  # (N,)
    corner = torch.where(w2 > torch.maximum(w0, w1), 2, (w1 > w0).long())
    vertex = faces.reshape(-1)[fragments.face_index.view(-1)[pixels] * 3 + corner]
    regions = vertex_regions.to(device=faces.device, dtype=torch.long)[vertex]
    region_map = torch.full_like(fragments.face_index, -1).view(-1).index_copy(0, pixels, regions)
    mask = fragments.mask[:, None].to(vertex_attributes.dtype)
    return RenderOutput(image=image, mask=mask, region_map=region_map.view_as(fragments.face_index),
                        fragments=fragments)
