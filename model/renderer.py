"""Differentiable triangle renderer in pure PyTorch (CPU and GPU).

Rasterise, then interpolate: the visible triangle of every pixel is found without gradients
(a vectorised scan of each triangle's bounding box and a z-buffer), then the barycentric
weights of the pixel centres are recomputed with autograd from the vertex positions, so
gradients reach both vertex positions and per-vertex attributes.

Screen space: x to the right and y downwards in pixels, pixel (i, j) centred at
(x, y) = (j + 0.5, i + 0.5); z larger means nearer the camera. No back-face culling.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

# Pixel centres this close outside an edge still count as covered (in barycentric units), so
# pixels on a shared edge are never left empty.
_EDGE_TOLERANCE = 1e-5
_EMPTY_KEY = torch.iinfo(torch.int64).min


@dataclass
class Fragments:
    """face_index (B, H, W) long, -1 where empty; bary (B, H, W, 3), zeros where empty."""

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


def _edge(ax: torch.Tensor, ay: torch.Tensor, bx: torch.Tensor, by: torch.Tensor,
          px: torch.Tensor, py: torch.Tensor) -> torch.Tensor:
    """Twice the signed area of (a, b, p): positive when p is left of a -> b (y down)."""
    return (bx - ax) * (py - ay) - (by - ay) * (px - ax)


def _barycentric(corners: torch.Tensor, px: torch.Tensor, py: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """corners (N, 3, 2+) screen positions, points (N,) -> weights (N, 3) and doubled area (N,)."""
    x0, x1, x2 = corners[:, 0, 0], corners[:, 1, 0], corners[:, 2, 0]
    y0, y1, y2 = corners[:, 0, 1], corners[:, 1, 1], corners[:, 2, 1]
    area = _edge(x0, y0, x1, y1, x2, y2)
    safe = torch.where(area.abs() > 1e-12, area, torch.ones_like(area))
    weights = torch.stack(
        [_edge(x1, y1, x2, y2, px, py), _edge(x2, y2, x0, y0, px, py), _edge(x0, y0, x1, y1, px, py)], dim=-1
    ) / safe[:, None]
    return weights, area


def _depth_key(depth: torch.Tensor) -> torch.Tensor:
    """float depths (N,) -> int64 keys in the same order (larger = nearer), room for an id below."""
    bits = depth.to(torch.float32).contiguous().view(torch.int32).to(torch.int64)
    ordered = torch.where(bits < 0, -(bits & 0x7FFFFFFF), bits)
    return ordered << 32


def rasterize(screen_vertices: torch.Tensor, faces: torch.Tensor, height: int, width: int) -> Fragments:
    """Visible triangle and barycentric weights of every pixel.

    screen_vertices (B, V, 3), faces (F, 3) long -> :class:`Fragments`. The nearest covering
    triangle wins; ``bary`` is differentiable with respect to ``screen_vertices``.
    """
    batch, num_vertices, _ = screen_vertices.shape
    device = screen_vertices.device
    faces = faces.to(device)
    num_faces = faces.shape[0]
    with torch.no_grad():
        corners = screen_vertices.detach()[:, faces]  # (B, F, 3, 3)
        lo, hi = corners[..., :2].amin(dim=2), corners[..., :2].amax(dim=2)
        # Pixels whose centres fall inside the bounding box, clipped to the image.
        j0 = torch.ceil(lo[..., 0] - 0.5).clamp(min=0).long()
        j1 = torch.floor(hi[..., 0] - 0.5).clamp(max=width - 1).long()
        i0 = torch.ceil(lo[..., 1] - 0.5).clamp(min=0).long()
        i1 = torch.floor(hi[..., 1] - 0.5).clamp(max=height - 1).long()
        box_w = (j1 - j0 + 1).clamp(min=0).flatten()
        box_h = (i1 - i0 + 1).clamp(min=0).flatten()
        counts = box_w * box_h
        triangle = torch.repeat_interleave(torch.arange(batch * num_faces, device=device), counts)
        starts = torch.cumsum(counts, 0) - counts
        local = torch.arange(triangle.numel(), device=device) - starts[triangle]
        cols = j0.flatten()[triangle] + local % box_w[triangle]
        rows = i0.flatten()[triangle] + local // box_w[triangle]
        tri_corners = corners.reshape(batch * num_faces, 3, 3)[triangle]
        weights, area = _barycentric(tri_corners, cols + 0.5, rows + 0.5)
        inside = (weights >= -_EDGE_TOLERANCE).all(dim=-1) & (area.abs() > 1e-12)
        triangle, rows, cols = triangle[inside], rows[inside], cols[inside]
        depth = (weights[inside] * tri_corners[inside][..., 2]).sum(-1)
        image = triangle // num_faces
        pixel = (image * height + rows) * width + cols
        keys = _depth_key(depth) | (triangle % num_faces)
        zbuffer = torch.full((batch * height * width,), _EMPTY_KEY, dtype=torch.int64, device=device)
        zbuffer.scatter_reduce_(0, pixel, keys, reduce="amax")
        covered = zbuffer != _EMPTY_KEY
        face_index = torch.where(covered, zbuffer & 0xFFFFFFFF, torch.full_like(zbuffer, -1))
    # Differentiable barycentrics of the winning triangles.
    covered_pixels = covered.nonzero().squeeze(1)
    winners = face_index[covered_pixels]
    b = covered_pixels // (height * width)
    rows = (covered_pixels // width) % height
    cols = covered_pixels % width
    win_corners = screen_vertices.reshape(batch * num_vertices, 3)[faces[winners] + (b * num_vertices)[:, None]]
    weights, _ = _barycentric(win_corners, cols.to(screen_vertices.dtype) + 0.5, rows.to(screen_vertices.dtype) + 0.5)
    bary = screen_vertices.new_zeros(batch * height * width, 3).index_put((covered_pixels,), weights)
    return Fragments(
        face_index=face_index.view(batch, height, width),
        bary=bary.view(batch, height, width, 3),
    )


def interpolate(attributes: torch.Tensor, faces: torch.Tensor, fragments: Fragments) -> torch.Tensor:
    """Per-vertex attributes (B, V, C) -> per-pixel (B, H, W, C), zeros where empty."""
    batch, num_vertices, channels = attributes.shape
    face_index = fragments.face_index
    covered = (face_index >= 0).flatten().nonzero().squeeze(1)
    _, height, width = face_index.shape
    b = covered // (height * width)
    vertex_ids = faces.to(attributes.device)[face_index.flatten()[covered]] + (b * num_vertices)[:, None]
    corner_values = attributes.reshape(batch * num_vertices, channels)[vertex_ids]  # (N, 3, C)
    weights = fragments.bary.reshape(-1, 3)[covered]
    values = (weights[..., None] * corner_values).sum(dim=1)
    out = attributes.new_zeros(batch * height * width, channels).index_put((covered,), values)
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
    region_map = torch.where(mask, regions, torch.full_like(regions, -1))
    return RenderOutput(image=image, mask=mask[:, None].to(vertex_attributes.dtype), region_map=region_map,
                        fragments=fragments)
