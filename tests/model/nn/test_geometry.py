import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from model.nn.geometry import (  # noqa: E402
    euler_to_matrix,
    matrix_to_euler_degrees,
    ndc_to_screen,
    pose_transform,
    project_to_pixels,
    rotation_6d_to_matrix,
    vertex_normals,
)


def test_6d_representation_gives_proper_rotations():
    torch.manual_seed(0)
    rotation = rotation_6d_to_matrix(torch.randn(64, 6))
    eye = torch.eye(3).expand(64, 3, 3)
    torch.testing.assert_close(rotation @ rotation.transpose(1, 2), eye, atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.linalg.det(rotation), torch.ones(64), atol=1e-5, rtol=0)


def test_6d_of_a_rotation_recovers_it():
    angles = torch.tensor([0.3, -0.2, 0.1]).view(3, 1)
    rotation = euler_to_matrix(*angles)
    d6 = torch.cat([rotation[:, :, 0], rotation[:, :, 1]], dim=1)
    torch.testing.assert_close(rotation_6d_to_matrix(d6), rotation, atol=1e-6, rtol=0)


def test_euler_round_trip_and_sign_conventions():
    torch.manual_seed(1)
    yaw, pitch, roll = (torch.empty(100).uniform_(-1.4, 1.4) for _ in range(3))
    degrees = matrix_to_euler_degrees(euler_to_matrix(yaw, pitch, roll))
    expected = torch.stack([yaw, pitch, roll], dim=1) * 180 / math.pi
    torch.testing.assert_close(degrees, expected, atol=1e-3, rtol=0)
    # Positive yaw turns the nose (+Z) toward +X; positive pitch tilts it down.
    nose = torch.tensor([0.0, 0.0, 1.0])
    turned = euler_to_matrix(torch.tensor([0.5]), torch.zeros(1), torch.zeros(1))[0] @ nose
    assert turned[0] > 0
    tilted = euler_to_matrix(torch.zeros(1), torch.tensor([0.5]), torch.zeros(1))[0] @ nose
    assert tilted[1] < 0


def test_pose_transform_rotates_scales_then_translates():
    vertices = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]]])
    rotation = euler_to_matrix(torch.zeros(1), torch.zeros(1), torch.tensor([math.pi / 2]))  # roll 90 deg
    posed = pose_transform(vertices, rotation, torch.tensor([[0.5, -0.5, 0.0]]), torch.tensor([2.0]))
    torch.testing.assert_close(posed, torch.tensor([[[0.5, 1.5, 0.0], [-3.5, -0.5, 0.0]]]), atol=1e-6, rtol=0)


def test_projection_maps_ndc_corners_to_pixel_corners():
    ndc = torch.tensor([[[-1.0, 1.0, 0.0], [1.0, -1.0, 0.0], [0.0, 0.0, 0.5]]])
    pixels = project_to_pixels(ndc, 128)
    torch.testing.assert_close(pixels, torch.tensor([[[0.0, 0.0], [128.0, 128.0], [64.0, 64.0]]]))
    screen = ndc_to_screen(ndc, 128)
    assert screen[0, 2, 2] == pytest.approx(32.0)


def test_vertex_normals_of_a_counter_clockwise_quad_point_at_the_viewer():
    vertices = torch.tensor([[[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [1.0, 1.0, 0.0], [0.0, 1.0, 0.0]]])
    faces = torch.tensor([[0, 1, 2], [0, 2, 3]])
    normals = vertex_normals(vertices, faces)
    torch.testing.assert_close(normals, torch.tensor([0.0, 0.0, 1.0]).expand(1, 4, 3))


def test_ndc_to_screen_matches_the_runtime_numpy_twin():
    from model.conventions import ndc_to_pixels

    ndc = torch.rand(2, 50, 3) * 2 - 1
    np.testing.assert_allclose(ndc_to_screen(ndc, 192).numpy(), ndc_to_pixels(ndc.numpy(), 192), atol=1e-4)
