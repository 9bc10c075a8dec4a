import dataclasses

import pytest

torch = pytest.importorskip("torch")

from training.identity_losses import LIP_GAPS, IdentityLoss, IdentityWeights, face_measurements  # noqa: E402

WEIGHTS = IdentityWeights(exchange=1.0, consistency=1.0, separation=1.0, neutral_prior=1.0, rigid_expression=1.0)


def _result(face_model, images):
    with torch.no_grad():
        return face_model(images)


def test_an_open_neutral_mouth_costs_and_a_closed_one_does_not(topology, face_model):
    loss = IdentityLoss(topology, WEIGHTS)
    result = _result(face_model, torch.rand(2, 3, face_model.image_size, face_model.image_size))
    lips = torch.as_tensor(sorted({v for pair in LIP_GAPS for v in pair}))
    measured = face_measurements(result.neutral_vertices)
    closed = result.neutral_vertices.clone()
    upper, lower = zip(*LIP_GAPS)
    middle = 0.5 * (closed[:, list(upper)] + closed[:, list(lower)])
    closed[:, list(upper)] = middle + torch.tensor([0.0, 0.0005, 0.0])
    closed[:, list(lower)] = middle - torch.tensor([0.0, 0.0005, 0.0])
    opened = result.neutral_vertices.clone()
    opened[:, list(lower)] -= torch.tensor([0.0, 0.01, 0.0])
    cost = {name: loss.neutral_prior(dataclasses.replace(result, neutral_vertices=v))
            for name, v in (("closed", closed), ("open", opened))}
    assert cost["open"] > 50 * cost["closed"] + 10
    assert measured.shape == (2, 12) and len(lips) == 10


def test_same_person_terms_pull_together_and_push_apart(topology, face_model):
    loss = IdentityLoss(topology, WEIGHTS)
    result = _result(face_model, torch.rand(4, 3, face_model.image_size, face_model.image_size))
    neutral = result.neutral_vertices.clone()
    # Pairs (0, 1) and (2, 3): each pair the same shape; the second person is 20 % taller.
    neutral[1] = neutral[0]
    neutral[2] = neutral[0] * torch.tensor([1.0, 1.2, 1.0])
    neutral[3] = neutral[2]
    person = torch.tensor([0, 0, 1, 1])
    apart = loss(dataclasses.replace(result, neutral_vertices=neutral), person, 2, None)
    assert apart["identity_consistency"] == pytest.approx(0.0, abs=1e-9)
    assert apart["identity_separation"] == pytest.approx(0.0, abs=1e-9)
    collapsed = neutral.clone()
    collapsed[:] = neutral[0]
    together = loss(dataclasses.replace(result, neutral_vertices=collapsed), person, 2, None)
    assert together["identity_separation"] == pytest.approx(WEIGHTS.margin_cm, rel=0.01)


def test_rigid_expression_counts_only_nose_and_forehead(topology, face_model):
    loss = IdentityLoss(topology, WEIGHTS)
    result = _result(face_model, torch.rand(1, 3, face_model.image_size, face_model.image_size))
    offsets = torch.zeros_like(result.expression_offsets)
    assert loss.rigid_expression(dataclasses.replace(result, expression_offsets=offsets)) == 0
    offsets[:, loss.rigid == 0] = 0.01
    assert loss.rigid_expression(dataclasses.replace(result, expression_offsets=offsets)) == 0
    offsets[:, loss.rigid == 1] = 0.01
    assert loss.rigid_expression(dataclasses.replace(result, expression_offsets=offsets)) > 0


def test_the_teacher_term_is_zero_when_features_mirror_the_teachers_similarities():
    torch.manual_seed(0)
    embedding = torch.randn(6, 128)
    embedding[5] = 0  # a photo without a teacher embedding is left out
    assert IdentityLoss.teacher_loss(embedding.clone(), embedding) == pytest.approx(0.0, abs=1e-6)
    assert IdentityLoss.teacher_loss(torch.randn(6, 128), embedding) > 0.005
    assert IdentityLoss.teacher_loss(torch.randn(6, 128), torch.zeros(6, 128)) is None


def test_the_fold_term_is_zero_on_the_template_and_grows_with_a_pleat(topology):
    loss = IdentityLoss(topology, dataclasses.replace(WEIGHTS, folds=1.0, fold_degrees=115.0))
    template = torch.as_tensor(topology.vertices)[None]
    assert loss.fold_penalty(template) == 0  # the template folds nowhere past 112 degrees
    pleated = template.clone()
    pleated[0, 1] -= torch.tensor([0.0, 0.0, 0.04])  # the nose tip pushed 4 cm into the head: a pit
    assert loss.fold_penalty(pleated) > 0


def test_the_shape_teacher_term_rewards_shapes_that_differ_as_the_teachers_embeddings_do(topology):
    """Neutral shapes whose pair distances follow the teacher's embedding distances cost nothing,
    whatever their size; shapes that ignore the teacher cost; too few embeddings give no term."""
    generator = torch.Generator().manual_seed(0)
    template = torch.as_tensor(topology.vertices[:468], dtype=torch.float32)
    directions = torch.randn(2, 468, 3, generator=generator) * 0.002
    amounts = torch.rand(8, 2, generator=generator)
    shapes = template + torch.einsum("bk,kvc->bvc", amounts, directions)
    embedding = torch.cat([amounts, torch.zeros(8, 126)], dim=1)  # the teacher sees the same two amounts
    agree = IdentityLoss.shape_teacher_loss(shapes, embedding)
    assert agree < 0.05
    assert IdentityLoss.shape_teacher_loss(shapes * 3.0, embedding) == pytest.approx(float(agree), abs=1e-4)
    shuffled = IdentityLoss.shape_teacher_loss(shapes[torch.randperm(8, generator=generator)], embedding)
    assert shuffled > agree + 0.3
    embedding[2:] = 0
    assert IdentityLoss.shape_teacher_loss(shapes, embedding) is None
