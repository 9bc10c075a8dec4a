import pytest

torch = pytest.importorskip("torch")

from model.nn.face_model import FaceReconstructionModel  # noqa: E402
from model.topology import REGION_NAMES  # noqa: E402
from training.identity_seeding import identity_shares, seed_identity_from_expression  # noqa: E402


def _photos(model):
    return torch.rand(6, 3, model.image_size, model.image_size, generator=torch.Generator().manual_seed(2))


@pytest.fixture
def model(topology):
    """A model like the landmark recipe's: a live expression branch, a collapsed identity decoder
    (a constant output: its last layer's weights zero, its bias not)."""
    torch.manual_seed(0)
    model = FaceReconstructionModel(topology)
    for module in model.modules():  # BatchNorm statistics of the test's photos: codes that differ between them
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = None
    with torch.no_grad():
        model.encode(_photos(model))
    model.eval()
    with torch.no_grad():
        model.expression_decoder.offsets.mlp[-1].weight.normal_(0.0, 1.0)
        model.expression_decoder.offsets.mlp[-1].bias.normal_(0.0, 0.05)
        model.identity_decoder.offsets.mlp[-1].weight.zero_()
        model.identity_decoder.offsets.mlp[-1].bias.normal_(0.0, 0.05)
    return model


def test_seeded_neutral_face_takes_the_old_canonical_shape_where_expressions_barely_reach(model, topology):
    images = _photos(model)
    upsampler = model.identity_decoder.offsets.upsampler
    share = upsampler(identity_shares(topology, upsampler.coarse_vertices)[None, :, None])[0, :, 0]  # (Vs,)
    rigid, expressive = share > 1 - 1e-6, share < 1e-6
    names = {REGION_NAMES[r] for r in topology.regions[: len(share)][expressive.numpy()]}
    assert rigid.sum() > 1000 and {"upper_lip", "lower_lip", "eye_left", "eye_right"} <= names
    with torch.no_grad():
        before = model(images)
        seed_identity_from_expression(model, topology, images[:3], torch.Generator().manual_seed(1))
        after = model(images)
    surface = len(share)
    old_canonical, old_neutral = before.expressive_vertices[:, :surface], before.neutral_vertices[:, :surface]
    spread = (old_canonical - old_canonical.mean(dim=0)).norm(dim=-1).mean()
    assert spread > 1e-3  # the photos' shapes differ by millimetres: the test compares something
    # the canonical face and its landmarks stay; the neutral face is the old canonical one on the
    # forehead, nose, cheeks and jaw, and the old neutral one (the same for every photo) at the lips and eyes
    torch.testing.assert_close(after.expressive_vertices, before.expressive_vertices, atol=1e-4, rtol=0)
    torch.testing.assert_close(after.landmarks_2d, before.landmarks_2d, atol=0.05, rtol=0)
    neutral = after.neutral_vertices[:, :surface]
    torch.testing.assert_close(neutral[:, rigid], old_canonical[:, rigid], atol=1e-4, rtol=0)
    torch.testing.assert_close(neutral[:, expressive], old_neutral[:, expressive], atol=1e-4, rtol=0)
    assert after.expression_offsets[:, rigid].abs().max() < 0.05 * before.expression_offsets.abs().max()


def test_seeding_keeps_training_mode_and_leaves_every_weight_finite(model, topology):
    model.train()
    seed_identity_from_expression(model, topology, torch.rand(2, 3, model.image_size, model.image_size))
    assert model.training
    assert all(torch.isfinite(p).all() for p in model.parameters())
