import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("mediapipe")

from model.nn.face_model import FaceReconstructionModel  # noqa: E402
from training.losses import FaceLoss, LossWeights, landmark_weights, uniform_laplacian  # noqa: E402


def test_landmark_weights_favour_eyes_lips_and_oval():
    w = landmark_weights(LossWeights())
    assert w.mean() == pytest.approx(1.0)
    assert w[33] > w[4] and w[13] > w[4] and w[10] > w[4]  # eye corner, lip, oval vs nose


def test_laplacian_vanishes_on_flat_affine_data(topology):
    laplacian = uniform_laplacian(topology.faces, topology.num_vertices)
    flat = torch.as_tensor(topology.vertices).clone()
    flat[:, 2] = 0.0
    affine = flat @ torch.tensor([[1.0, 0.2, 0.0], [0.1, 1.0, 0.0], [0.0, 0.0, 1.0]])
    from training.losses import _apply

    boundary = torch.zeros(topology.num_vertices, dtype=torch.bool)
    edges = torch.as_tensor(topology.faces)[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2).sort(dim=1).values
    unique, counts = edges.unique(dim=0, return_counts=True)
    boundary[unique[counts == 1].flatten()] = True
    out = _apply(laplacian, affine[None])[0]
    # Uniform Laplacian of a linear field is not exactly zero on irregular meshes, but small.
    assert out[~boundary].abs().mean() < 0.1 * affine.abs().mean()


def test_perfect_landmarks_and_photo_give_lower_loss(topology, synthetic_data):
    from training.data.augment import AugmentConfig
    from training.data.dataset import PreparedFaces

    torch.manual_seed(0)
    model = FaceReconstructionModel(topology).eval()
    data = PreparedFaces(synthetic_data, "val", topology, AugmentConfig())
    batch = {k: torch.stack([data[i][k] for i in range(2)]) for k in ("image", "landmarks", "photo_mask")}
    criterion = FaceLoss(topology, LossWeights(), model.image_size)
    with torch.no_grad():
        result = model(batch["image"])
        total, terms = criterion(result, batch)
        assert set(terms) == {"landmarks", "region_image", "identity_offsets", "expression_offsets", "smoothness",
                              "symmetry", "albedo_smoothness"}
        exact = dict(batch, landmarks=result.vertices_2d[:, :468].clone())
        _, exact_terms = criterion(result, exact)
    assert exact_terms["landmarks"] < 1e-6 < terms["landmarks"]
    assert torch.isfinite(total)


def test_region_loss_weighs_each_region_by_its_own_area(topology):
    """A small region that is wrong must cost as much as a big region that is wrong."""
    torch.manual_seed(0)
    model = FaceReconstructionModel(topology).eval()
    criterion = FaceLoss(topology, LossWeights(), model.image_size)
    with torch.no_grad():
        result = model(torch.zeros(1, 3, 128, 128))
        from model.nn.geometry import ndc_to_screen, vertex_normals
        from model.nn.renderer import render
        from model.nn.shading import shade

        colours = shade(result.albedo, vertex_normals(result.posed_vertices, criterion.faces), result.lighting)
        out = render(ndc_to_screen(result.posed_vertices, 128), criterion.faces, colours, criterion.regions, 128, 128)
        photo = out.image.clone()
        mask = torch.ones(1, 128, 128)
        base = criterion.region_image_loss(result, photo, mask)
        eye = (out.region_map == 3)[:, None].expand_as(photo)
        cheek = (out.region_map == 6)[:, None].expand_as(photo)
        eye_wrong = criterion.region_image_loss(result, torch.where(eye, 1 - photo, photo), mask)
        cheek_wrong = criterion.region_image_loss(result, torch.where(cheek, 1 - photo, photo), mask)
    assert base < 0.01
    assert eye_wrong == pytest.approx(cheek_wrong.item(), rel=0.5)


def test_white_light_pulls_tinted_or_dim_light_toward_white(topology):
    """The white-light prior is zero for white unit ambient light and grows with a tint or a
    dimmer light, so the albedo, not the light, carries the skin's colour."""
    torch.manual_seed(0)
    model = FaceReconstructionModel(topology).eval()
    criterion = FaceLoss(topology, LossWeights(white_light=1.0, region_image=0.0), model.image_size)
    batch = {"image": torch.rand(1, 3, 128, 128), "landmarks": torch.zeros(1, 468, 2),
             "photo_mask": torch.ones(1, 128, 128)}
    with torch.no_grad():
        result = model(batch["image"])  # the untrained model starts with white unit ambient light
        _, white = criterion(result, batch)
        result.lighting[:, 0] = torch.tensor([1.2, 1.0, 0.8])
        _, tinted = criterion(result, batch)
        result.lighting[:, 0] = 0.7
        _, dim = criterion(result, batch)
    assert white["white_light"] < 1e-9 < tinted["white_light"]
    assert dim["white_light"] > 1e-3
