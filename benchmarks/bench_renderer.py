"""Prints the differentiable renderer's speed: forward + backward on the full output mesh.

Usage: python benchmarks/bench_renderer.py [--batch 32] [--size 128] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from model.appearance import shade
from model.geometry import euler_to_matrix, ndc_to_screen, pose_transform, vertex_normals
from model.renderer import render
from model.topology import FaceTopology


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()

    device = torch.device(args.device)
    topology = FaceTopology.load()
    faces = torch.as_tensor(topology.faces, device=device)
    regions = torch.as_tensor(topology.regions, device=device)
    template = torch.as_tensor(topology.vertices, device=device).expand(args.batch, -1, -1)
    generator = torch.Generator().manual_seed(0)
    angles = (torch.rand(3, args.batch, generator=generator) - 0.5) * torch.tensor([[1.2], [0.5], [0.4]])
    rotation = euler_to_matrix(*angles).to(device)
    translation = ((torch.rand(args.batch, 3, generator=generator) - 0.5) * 0.2).to(device)
    scale = torch.full((args.batch,), 10.0, device=device)
    albedo = torch.full((args.batch, topology.num_vertices, 3), 0.6, device=device)
    lighting = torch.zeros(args.batch, 9, 3, device=device)
    lighting[:, 0] = 1.0

    def step() -> float:
        vertices = template.clone().requires_grad_(True)
        colours = albedo.clone().requires_grad_(True)
        posed = pose_transform(vertices, rotation, translation, scale)
        shaded = shade(colours, vertex_normals(posed, faces), lighting)
        start = time.perf_counter()
        out = render(ndc_to_screen(posed, args.size), faces, shaded, regions, args.size, args.size)
        out.image.mean().backward()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    for _ in range(3):
        step()
    seconds = statistics.median(step() for _ in range(args.repeats))
    coverage = render(ndc_to_screen(pose_transform(template, rotation, translation, scale), args.size), faces,
                      albedo, regions, args.size, args.size).mask.mean().item()
    print(f"renderer forward+backward, {topology.num_vertices} vertices / {topology.num_faces} triangles, "
          f"batch {args.batch} at {args.size}x{args.size} on {device} ({torch.get_num_threads()} threads), "
          f"face covers {coverage:.0%} of the image: {seconds * 1e3:.1f} ms/batch, "
          f"{seconds * 1e3 / args.batch:.2f} ms/image")


if __name__ == "__main__":
    main()
