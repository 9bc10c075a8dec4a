import pytest

torch = pytest.importorskip("torch")

from model.nn.encoders import EncodedFace  # noqa: E402
from model.nn.face_model import FaceReconstruction, FaceReconstructionModel  # noqa: E402
from model.nn.geometry import vertex_normals  # noqa: E402
from model.nn.shading import shade  # noqa: E402


def test_forward_returns_every_output_with_documented_shapes(face_model, topology):
    images = torch.rand(3, 3, face_model.image_size, face_model.image_size)
    with torch.no_grad():
        result = face_model(images)
    v = topology.num_vertices
    expected = {
        "neutral_vertices": (3, v, 3), "expressive_vertices": (3, v, 3), "posed_vertices": (3, v, 3),
        "vertices_2d": (3, v, 2), "landmarks_2d": (3, 68, 2), "landmarks_3d": (3, 68, 3),
        "rotation": (3, 3, 3), "euler_degrees": (3, 3), "translation": (3, 3), "scale": (3,),
        "albedo": (3, v, 3), "lighting": (3, 9, 3),
    }
    for name in FaceReconstruction.OUTPUT_NAMES:
        assert tuple(getattr(result, name).shape) == expected[name], name
    torch.testing.assert_close(result.landmarks_2d, result.vertices_2d[:, torch.as_tensor(topology.landmarks68)])
    assert (result.albedo >= 0).all() and (result.albedo <= 1).all()
    assert (result.scale > 0).all()


def test_each_face_of_a_batch_decodes_as_it_does_alone(face_model):
    """decode stacks the three decoders' values on the batch axis to upsample them together: no
    face's shape, expression or albedo may come from another row of the batch."""
    torch.manual_seed(1)
    encoded = face_model.encode(torch.rand(3, 3, face_model.image_size, face_model.image_size))
    codes = EncodedFace(*(torch.randn_like(code) for code in (encoded.identity, encoded.expression)),
                        encoded.pose, torch.randn_like(encoded.albedo), encoded.lighting)
    with torch.no_grad():
        together = face_model.decode(codes)
        alone = [face_model.decode(EncodedFace(*(code[k : k + 1] for code in vars(codes).values())))
                 for k in range(3)]
    for name in FaceReconstruction.OUTPUT_NAMES:
        torch.testing.assert_close(getattr(together, name), torch.cat([getattr(a, name) for a in alone]),
                                   atol=1e-5, rtol=1e-5, msg=name)
    for name in ("neutral_vertices", "expressive_vertices", "albedo"):  # the rows differ
        rows = getattr(together, name)
        assert (rows[0] - rows[1]).abs().max() > 1e-4, name


def test_untrained_model_starts_from_the_template_facing_the_camera(topology):
    torch.manual_seed(0)
    model = FaceReconstructionModel(topology).eval()
    with torch.no_grad():
        result = model(torch.rand(2, 3, model.image_size, model.image_size))
    template = torch.as_tensor(topology.vertices)
    torch.testing.assert_close(result.neutral_vertices, template.expand_as(result.neutral_vertices))
    torch.testing.assert_close(result.expressive_vertices, result.neutral_vertices)
    torch.testing.assert_close(result.euler_degrees, torch.zeros(2, 3), atol=1e-4, rtol=0)
    # The template face covers the middle of the crop.
    xy = result.vertices_2d[0]
    assert 0 < xy.min() and xy.max() < model.image_size


def test_landmark_offsets_move_the_landmarks_in_the_face_frame(topology):
    """On the untrained model's frontal face, an offset back (-z) moves a landmark in depth only,
    and one to the subject's left (+x) moves it right in the crop by offset x scale pixels."""
    torch.manual_seed(0)
    model = FaceReconstructionModel(topology).eval()
    images = torch.rand(1, 3, model.image_size, model.image_size)
    half = model.image_size / 2.0
    with torch.no_grad():
        plain = model(images)
        model.landmark_offsets[:, 2] = -0.02
        back = model(images)
        model.landmark_offsets.zero_()
        model.landmark_offsets[:, 0] = 0.01
        left = model(images)
    pixels_per_metre = float(plain.scale[0]) * half
    torch.testing.assert_close(back.landmarks_2d, plain.landmarks_2d, atol=1e-3, rtol=0)
    torch.testing.assert_close(back.landmarks_3d[..., 2], plain.landmarks_3d[..., 2] - 0.02 * pixels_per_metre,
                               atol=1e-3, rtol=0)
    torch.testing.assert_close(left.landmarks_2d[..., 0], plain.landmarks_2d[..., 0] + 0.01 * pixels_per_metre,
                               atol=1e-3, rtol=0)
    torch.testing.assert_close(left.vertices_2d, plain.vertices_2d)


def test_expression_decoder_reads_the_identity_shape(topology):
    torch.manual_seed(0)
    model = FaceReconstructionModel(topology)  # its own: the shared fixture must stay as exported
    decoder = model.expression_decoder
    expression = torch.randn(1, model.config.encoder.expression_dim)
    template = torch.as_tensor(topology.vertices[: topology.num_surface_vertices])[None]
    wider = template * torch.tensor([0.1, -0.05, 0.0])  # another identity's offsets from the template
    with torch.no_grad():
        torch.nn.init.normal_(decoder.shape_encoder.weight, std=0.05)
        torch.nn.init.normal_(decoder.offsets.mlp[-1].weight, std=0.02)  # zero-initialised output layer
        offsets_a = decoder.coarse_offsets(expression, torch.zeros_like(template))
        offsets_b = decoder.coarse_offsets(expression, wider)
    assert (offsets_a - offsets_b).abs().max() > 1e-6


def test_gradients_reach_every_network_part(topology):
    """Zero-initialised output layers block the trunk's gradient at step 0 only."""
    torch.manual_seed(0)
    model = FaceReconstructionModel(topology)
    optimiser = torch.optim.SGD(model.parameters(), lr=0.1)
    images = torch.rand(2, 3, model.image_size, model.image_size)
    for _ in range(2):
        optimiser.zero_grad()
        result = model(images)
        normals = vertex_normals(result.posed_vertices, model.faces)
        colours = shade(result.albedo, normals, result.lighting)
        loss = ((result.landmarks_2d / model.image_size).square().mean() + colours.mean()
                + result.neutral_vertices.square().mean())
        loss.backward()
        optimiser.step()
    assert torch.isfinite(loss)
    for part in (model.encoder.trunk, model.encoder.pose_head, model.identity_decoder, model.expression_decoder,
                 model.albedo_decoder, model.encoder.lighting_head):
        grads = [p.grad for p in part.parameters() if p.grad is not None]
        assert grads and any(g.abs().sum() > 0 for g in grads), type(part).__name__


def test_ambient_light_shades_to_the_albedo():
    albedo = torch.rand(1, 5, 3)
    normals = torch.nn.functional.normalize(torch.randn(1, 5, 3), dim=-1)
    lighting = torch.zeros(1, 9, 3)
    lighting[:, 0] = 1.0
    torch.testing.assert_close(shade(albedo, normals, lighting), albedo)


def test_landmark_offsets_are_saved_with_the_weights(topology):
    model = FaceReconstructionModel(topology)
    with torch.no_grad():
        model.landmark_offsets.fill_(0.01)
    state = model.state_dict()
    assert tuple(state["landmark_offsets"].shape) == (68, 3)
    other = FaceReconstructionModel(topology)
    other.load_state_dict(state)
    assert torch.equal(other.landmark_offsets, model.landmark_offsets)


def test_a_restarted_decoder_keeps_its_output_and_can_learn_again(topology):
    """A collapsed decoder (dead ReLUs: the same output for every code) restarts with the same
    output and gradients that reach its weights."""
    torch.manual_seed(0)
    model = FaceReconstructionModel(topology)
    decoder = model.identity_decoder.offsets
    with torch.no_grad():
        decoder.mlp[2].bias.fill_(-100.0)  # every ReLU of the second layer off
        decoder.mlp[-1].bias.normal_(0.0, 0.1)
    codes = torch.randn(3, model.config.encoder.identity_dim)
    before = decoder.coarse(codes).detach()
    decoder.coarse(codes).square().sum().backward()
    assert decoder.mlp[-1].weight.grad.abs().max() == 0  # collapsed: nothing to learn from
    decoder.restart()
    decoder.zero_grad()
    after = decoder.coarse(codes)
    assert (after - before).abs().max() < 0.05  # 0.5 mm at the identity decoder's offset scale
    assert (after[0] - after[1]).abs().max() > 0  # and the code matters again
    decoder.coarse(codes).square().sum().backward()
    assert decoder.mlp[-1].weight.grad.abs().max() > 0


def test_colour_summary_reads_the_crops_colours_and_starts_as_nothing(topology):
    """A model gaining the appearance heads' colour path answers as before until it trains; once
    its last layer is non-zero, a recoloured crop changes the appearance codes, not the others."""
    import dataclasses

    from model.nn.encoders import EncoderConfig
    from model.nn.face_model import ModelConfig

    torch.manual_seed(0)
    plain = FaceReconstructionModel(topology).eval()
    coloured = FaceReconstructionModel(topology, ModelConfig(encoder=EncoderConfig(colour_grid=4))).eval()
    state = plain.state_dict()
    coloured.load_state_dict({**coloured.state_dict(), **state})
    images = torch.rand(2, 3, plain.image_size, plain.image_size)
    with torch.no_grad():
        before, after = plain(images), coloured(images)
        for field in dataclasses.fields(before):
            torch.testing.assert_close(getattr(after, field.name), getattr(before, field.name))
        assert coloured.encoder.colour_summary is not None
        torch.nn.init.normal_(coloured.encoder.colour_summary.mlp[-1].weight)
        redder = images.clone()
        redder[:, 0] = 1.0
        base, recoloured = coloured.encode(images), coloured.encode(redder)
        shifted = plain.encode(images), plain.encode(redder)
    # the colour path moves the albedo code beyond what the trunk alone does (the untrained lighting
    # head's last layer is zero, so only the albedo shows it here)
    assert (base.albedo - recoloured.albedo).abs().max() > 2 * (shifted[0].albedo - shifted[1].albedo).abs().max()
    torch.testing.assert_close(base.identity, coloured.encode(images).identity)


def test_an_identity_trunk_tail_seeded_from_the_trunk_answers_as_before_and_feeds_only_the_identity(topology):
    """EncoderConfig.identity_trunk_blocks: the identity head reads its own copy of the trunk's last
    blocks. Seeded from the shared trunk it computes what the model without it did; trained apart,
    it moves the identity code but not the pose or expression codes."""
    import dataclasses

    from model.nn.encoders import EncoderConfig
    from model.nn.face_model import ModelConfig

    torch.manual_seed(0)
    plain = FaceReconstructionModel(topology).eval()
    tailed = FaceReconstructionModel(topology, ModelConfig(encoder=EncoderConfig(identity_trunk_blocks=2))).eval()
    tailed.load_state_dict({**tailed.state_dict(), **plain.state_dict()})
    assert tailed.encoder.identity_trunk is not None
    tailed.encoder.identity_trunk.seed_from(tailed.encoder.trunk)
    images = torch.rand(2, 3, plain.image_size, plain.image_size)
    with torch.no_grad():
        before, after = plain(images), tailed(images)
        for field in dataclasses.fields(before):
            torch.testing.assert_close(getattr(after, field.name), getattr(before, field.name))
        tailed.encoder.identity_trunk.project[1].bias.add_(0.5)
        codes, reference = tailed.encode(images), plain.encode(images)
    assert (codes.identity - reference.identity).abs().max() > 1e-3
    for name in ("expression", "pose", "albedo", "lighting"):
        torch.testing.assert_close(getattr(codes, name), getattr(reference, name))
