import dataclasses
from pathlib import Path

import pytest

pytest.importorskip("torch")

from model.nn.face_model import ModelConfig  # noqa: E402
from training.config import TrainConfig, from_dict, load_toml, merge  # noqa: E402

CONFIGS = Path(__file__).resolve().parents[2] / "training" / "configs"


def _write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_extends_merges_tables_and_the_extending_file_wins(tmp_path):
    _write(tmp_path, "base/base.toml", "seed = 1\nworkers = 3\n[optim]\nsteps = 100\nbatch_size = 8\n"
                                       "[model.encoder]\nstage_widths = [8, 16, 32, 64]\n")
    _write(tmp_path, "base/middle.toml", 'extends = "base.toml"\nseed = 2\n[optim]\nsteps = 200\n')
    child = _write(tmp_path, "child.toml", 'extends = "base/middle.toml"\n[optim]\nwarmup_steps = 5\n'
                                           "[loss]\nregion_image = 0\n")
    config = TrainConfig.load(child)
    assert (config.seed, config.workers) == (2, 3)
    assert (config.optim.steps, config.optim.batch_size, config.optim.warmup_steps) == (200, 8, 5)
    assert config.model.encoder.stage_widths == (8, 16, 32, 64)  # TOML arrays become the fields' tuples
    assert config.loss.region_image == 0.0 and isinstance(config.loss.region_image, float)
    assert config.augment == TrainConfig().augment
    assert "extends" not in load_toml(child)


def test_merge_replaces_values_and_merges_only_tables():
    base = {"a": {"x": 1, "y": [1, 2]}, "b": 1}
    assert merge(base, {"a": {"y": [3]}, "c": {"z": 0}}) == {"a": {"x": 1, "y": [3]}, "b": 1, "c": {"z": 0}}
    assert merge(base, {"a": 5}) == {"a": 5, "b": 1}
    assert base == {"a": {"x": 1, "y": [1, 2]}, "b": 1}


def test_extends_cycles_and_missing_or_broken_files_are_errors(tmp_path):
    _write(tmp_path, "a.toml", 'extends = "b.toml"\n')
    _write(tmp_path, "b.toml", 'extends = "c.toml"\n')
    _write(tmp_path, "c.toml", 'extends = "a.toml"\nseed = 1\n')
    with pytest.raises(ValueError, match=r"extends cycle: .*a\.toml -> .*b\.toml -> .*c\.toml -> .*a\.toml"):
        TrainConfig.load(tmp_path / "a.toml")
    _write(tmp_path, "self.toml", 'extends = "self.toml"\n')
    with pytest.raises(ValueError, match="cycle"):
        TrainConfig.load(tmp_path / "self.toml")
    _write(tmp_path, "broken.toml", "seed = = 1\n")
    _write(tmp_path, "child.toml", 'extends = "broken.toml"\n')
    with pytest.raises(ValueError, match=r"broken\.toml: "):
        TrainConfig.load(tmp_path / "child.toml")
    _write(tmp_path, "orphan.toml", 'extends = "gone.toml"\n')
    with pytest.raises(FileNotFoundError, match="orphan.toml extends 'gone.toml'"):
        TrainConfig.load(tmp_path / "orphan.toml")


def test_unknown_keys_are_named_by_their_path(tmp_path):
    _write(tmp_path, "base.toml", "[model.encoder]\nexpression_dim = 32\n")
    typo = _write(tmp_path, "typo.toml", 'extends = "base.toml"\n[model.encoder]\nexpresion_dim = 16\n')
    with pytest.raises(ValueError, match=r"unknown config key: model\.encoder\.expresion_dim$"):
        TrainConfig.load(typo)
    with pytest.raises(ValueError, match=r"unknown config keys: optim\.stpes, optim\.batch$"):
        from_dict(TrainConfig, {"optim": {"stpes": 3, "batch": 8, "steps": 3}})
    with pytest.raises(ValueError, match="unknown config key: extends"):  # only a file's top level extends
        from_dict(TrainConfig, {"extends": "x.toml"})


def test_values_must_have_their_fields_types():
    with pytest.raises(ValueError, match=r"optim\.steps must be int, got str"):
        from_dict(TrainConfig, {"optim": {"steps": "100"}})
    with pytest.raises(ValueError, match=r"sampling\.pose_balanced must be bool, got int"):
        from_dict(TrainConfig, {"sampling": {"pose_balanced": 1}})
    with pytest.raises(ValueError, match=r"model\.encoder\.stage_widths\[1\] must be int, got float"):
        from_dict(TrainConfig, {"model": {"encoder": {"stage_widths": [8, 16.5, 32, 64]}}})
    with pytest.raises(ValueError, match=r"config key loss must be a table, got float"):
        from_dict(TrainConfig, {"loss": 1.0})


def test_the_input_size_has_one_value():
    with pytest.raises(ValueError, match=r"model\.encoder\.image_size \(160\) and augment\.output_size \(128\)"):
        from_dict(TrainConfig, {"model": {"encoder": {"image_size": 160}}})
    config = from_dict(TrainConfig, {"model": {"encoder": {"image_size": 160}}, "augment": {"output_size": 160}})
    assert config.model.encoder.image_size == config.augment.output_size == 160


def test_encoder_checks_name_the_section():
    with pytest.raises(ValueError, match=r"model\.encoder: image_size \(100\) must be a multiple of 32"):
        from_dict(TrainConfig, {"model": {"encoder": {"image_size": 100}}, "augment": {"output_size": 100}})
    with pytest.raises(ValueError, match=r"model_config\.encoder: stage_widths .* one entry per stage"):
        from_dict(ModelConfig, {"encoder": {"blocks_per_stage": [1, 2]}}, "model_config")


@pytest.mark.parametrize("name", sorted(p.name for p in CONFIGS.glob("*.toml")))
def test_every_shipped_config_loads(name):
    config = TrainConfig.load(CONFIGS / name)
    # A fine-tune (from init_checkpoint) may be shorter than a stage of the from-scratch recipe.
    assert (config.optim.steps >= 3000 or config.init_checkpoint) and config.workers == 1


def test_the_staged_recipe_changes_only_what_each_stage_says():
    """(threads, steps, region_image loss, pose-balanced, sampling power) of every shipped file."""
    expected = {
        "landmark_only": (1, 3000, 0.0, False, 1.0), "full_loss": (1, 3000, 0.5, False, 1.0),
        "landmark_only_stage2": (2, 6000, 0.0, False, 1.0), "landmark_only_stage3": (2, 8500, 0.0, False, 1.0),
        "landmark_only_stage4": (2, 11500, 0.0, False, 1.0), "landmark_posed": (2, 14500, 0.0, True, 0.5),
        "landmark_posed_stage2": (2, 17500, 0.0, True, 0.5), "landmark_posed_stage3": (2, 21500, 0.0, True, 0.75),
        "landmark_posed_stage4": (2, 24500, 0.0, True, 1.0), "landmark_posed_stage5": (2, 27500, 0.0, True, 1.0),
    }
    # start from a shipped checkpoint: tested below
    fine_tunes = {"identity", "identity_seeded", "appearance", "identity_trunk", "identity_shape_teacher",
                  "identity_pairs", "identity_posed", "identity_posed_stage2", "identity_posed_stage3",
                  "identity_posed_stage4", "identity_posed_stage5"}
    assert sorted(expected) == sorted(p.stem for p in CONFIGS.glob("*.toml") if p.stem not in fine_tunes)
    first = TrainConfig.load(CONFIGS / "landmark_only.toml")
    for name, values in expected.items():
        config = TrainConfig.load(CONFIGS / f"{name}.toml")
        assert (config.threads, config.optim.steps, config.loss.region_image, config.sampling.pose_balanced,
                config.sampling.power) == values, name
        # Everything else is the first stage's.
        assert config.model == first.model and config.augment == first.augment, name
        assert (config.optim.learning_rate, config.optim.warmup_steps, config.val_samples) == (2e-3, 150, 1024), name


def test_the_identity_fine_tune_turns_on_every_identity_term_and_the_image_loss():
    config = TrainConfig.load(CONFIGS / "identity.toml")
    assert config.init_checkpoint and config.freeze_batchnorm
    assert config.loss.region_image > 0 and config.identity_sampling.pairs_per_batch > 0
    weights = config.identity
    assert min(weights.exchange, weights.consistency, weights.separation, weights.neutral_prior,
               weights.rigid_expression) > 0


def test_the_identity_trunk_stages_train_the_identity_tail_and_leave_the_landmark_trunk_frozen():
    """From the appearance checkpoint: the identity head's own trunk tail, the colour path kept, only the
    tail, the identity and expression heads and their decoders trainable (the shared trunk, the pose
    head and the appearance frozen), the identity terms, the teacher and the image loss on; the shape
    teacher stage resumes it and changes only its steps and the shape teacher."""
    trunk = TrainConfig.load(CONFIGS / "identity_trunk.toml")
    shape = TrainConfig.load(CONFIGS / "identity_shape_teacher.toml")
    assert trunk.init_checkpoint == "runs/appearance/last.pt" and trunk.freeze_batchnorm
    assert trunk.model.encoder.identity_trunk_blocks > 0 and trunk.model.encoder.colour_grid > 0
    assert not trunk.seed_identity_from_expression and not trunk.restart_identity_branch
    assert set(trunk.trainable) == {"encoder.identity_trunk", "encoder.identity_head", "encoder.expression_head",
                                    "identity_decoder", "expression_decoder"}
    assert trunk.loss.region_image > 0 and trunk.identity.teacher > 0 and trunk.identity.shape_teacher == 0
    assert min(trunk.identity.exchange, trunk.identity.consistency, trunk.identity.separation) > 0
    assert shape.init_checkpoint == "runs/identity_trunk/last.pt" and shape.identity.shape_teacher > 0
    assert shape.model == trunk.model and shape.trainable == trunk.trainable and shape.loss == trunk.loss
    assert dataclasses.replace(shape.identity, shape_teacher=0.0) == trunk.identity


def test_the_pair_and_turned_face_stages_resume_the_shape_teacher_and_change_only_what_they_say():
    """identity_pairs: the shape teacher stage with every photo of the batch in same-person pairs;
    identity_posed: a larger batch whose unpaired faces are drawn pose-balanced (turned faces);
    identity_posed_stage2 to _stage5: the shape teacher doubled, four times. Model, trainable set and losses stay."""
    shape = TrainConfig.load(CONFIGS / "identity_shape_teacher.toml")
    pairs = TrainConfig.load(CONFIGS / "identity_pairs.toml")
    posed = TrainConfig.load(CONFIGS / "identity_posed.toml")
    stage2 = TrainConfig.load(CONFIGS / "identity_posed_stage2.toml")
    stage3 = TrainConfig.load(CONFIGS / "identity_posed_stage3.toml")
    stage4 = TrainConfig.load(CONFIGS / "identity_posed_stage4.toml")
    stage5 = TrainConfig.load(CONFIGS / "identity_posed_stage5.toml")
    assert pairs.init_checkpoint == "runs/identity_shape_teacher/last.pt"
    assert posed.init_checkpoint == "runs/identity_pairs/last.pt"
    assert stage2.init_checkpoint == "runs/identity_posed/last.pt"
    assert 2 * pairs.identity_sampling.pairs_per_batch == pairs.optim.batch_size
    assert not pairs.sampling.pose_balanced and posed.sampling.pose_balanced and posed.sampling.power == 1.0
    assert posed.identity_sampling.pairs_per_batch == pairs.identity_sampling.pairs_per_batch
    assert posed.optim.batch_size > 2 * posed.identity_sampling.pairs_per_batch
    assert stage3.init_checkpoint == "runs/identity_posed_stage2/last.pt"
    assert stage4.init_checkpoint == "runs/identity_posed_stage3/last.pt"
    assert stage5.init_checkpoint == "runs/identity_posed_stage4/last.pt"
    teachers = [c.identity.shape_teacher for c in (posed, stage2, stage3, stage4, stage5)]
    assert teachers == [shape.identity.shape_teacher * 2**k for k in range(5)]
    for stage in (stage3, stage4, stage5):
        assert dataclasses.replace(stage, init_checkpoint="", identity=shape.identity) == dataclasses.replace(
            posed, init_checkpoint="", optim=dataclasses.replace(posed.optim, steps=stage.optim.steps))
    for config in (pairs, posed, stage2, stage3, stage4, stage5):
        assert config.model == shape.model and config.trainable == shape.trainable and config.loss == shape.loss
        assert config.loss.region_image > 0 and config.freeze_batchnorm


def test_the_appearance_stage_trains_only_albedo_and_lighting_with_the_image_loss():
    """From the seeded identity model: the colour path on, only the appearance parameters trainable
    (so shape, pose and identity stay as they were), BatchNorm frozen, the image loss and the
    white-light prior on, the identity terms off (nothing they reach trains)."""
    seeded = TrainConfig.load(CONFIGS / "identity_seeded.toml")
    appearance = TrainConfig.load(CONFIGS / "appearance.toml")
    assert appearance.init_checkpoint == "runs/identity_seeded/last.pt" and appearance.freeze_batchnorm
    assert not appearance.seed_identity_from_expression
    assert appearance.model.encoder.colour_grid > 0 and seeded.model.encoder.colour_grid == 0
    assert all(name.startswith(("encoder.colour_summary", "encoder.albedo_head", "encoder.lighting_head",
                                "albedo_decoder")) for name in appearance.trainable)
    assert appearance.loss.region_image > 0 and appearance.loss.white_light > 0
    weights = appearance.identity
    assert max(weights.exchange, weights.consistency, weights.separation, weights.neutral_prior,
               weights.rigid_expression, weights.folds, weights.teacher) == 0


def test_the_seeded_identity_fine_tune_differs_from_identity_toml_only_in_its_start_and_the_expression_head():
    plain, seeded = TrainConfig.load(CONFIGS / "identity.toml"), TrainConfig.load(CONFIGS / "identity_seeded.toml")
    assert seeded.seed_identity_from_expression and not seeded.restart_identity_branch
    assert set(seeded.trainable) - set(plain.trainable) == {"encoder.expression_head"}
    assert (seeded.loss, seeded.identity, seeded.optim) == (plain.loss, plain.identity, plain.optim)

