"""Prints the differentiable renderer's speed: forward + backward on the full output face mesh.

Times ``render`` plus ``image.mean().backward()`` to the screen-space vertex positions and the
per-vertex colours, for a batch of slightly different poses of the template face filling most
of the image. Usage: python benchmarks/bench_renderer.py [--batch 32] [--size 128] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from model.nn.geometry import euler_to_matrix, ndc_to_screen, pose_transform
from model.nn.renderer import render
from model.topology import FaceTopology


def posed_faces(topology: FaceTopology, batch: int, size: int, device: torch.device) -> torch.Tensor:
    """Template posed with jittered yaw, pitch, roll and offset -> screen vertices (batch, V, 3)."""
    generator = torch.Generator().manual_seed(0)
    angles = (torch.rand(3, batch, generator=generator) - 0.5) * torch.tensor([[0.6], [0.3], [0.2]])
    translation = (torch.rand(batch, 3, generator=generator) - 0.5) * 0.1
    scale = torch.full((batch,), 12.0)  # NDC per metre: the 0.15 m wide face spans ~90% of the image
    template = torch.as_tensor(topology.vertices).expand(batch, -1, -1)
    posed = pose_transform(template, euler_to_matrix(*angles), translation, scale)
    return ndc_to_screen(posed, size).to(device)


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
    screen = posed_faces(topology, args.batch, args.size, device)
    colours = torch.rand(args.batch, topology.num_vertices, 3, generator=torch.Generator().manual_seed(1)).to(device)

    def step() -> float:
        vertices = screen.clone().requires_grad_(True)
        albedo = colours.clone().requires_grad_(True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        render(vertices, faces, albedo, regions, args.size, args.size).image.mean().backward()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    for _ in range(3):
        step()
    seconds = statistics.median(step() for _ in range(args.repeats))
    with torch.no_grad():
        coverage = render(screen, faces, colours, regions, args.size, args.size).mask.mean().item()
    threads = f", {torch.get_num_threads()} threads" if device.type == "cpu" else ""
    print(f"renderer forward+backward on {device}{threads}: face mesh {topology.num_vertices} vertices / "
          f"{topology.num_faces} triangles, batch {args.batch} at {args.size}x{args.size}, face covers "
          f"{coverage:.0%} of the image; median of {args.repeats}: {seconds * 1e3:.1f} ms/batch, "
          f"{seconds * 1e3 / args.batch:.2f} ms/image")


if __name__ == "__main__":
    main()
