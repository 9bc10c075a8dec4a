import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("tensorboard")

from training.config import TrainConfig, from_dict  # noqa: E402
from training.trainer import lr_factor, train  # noqa: E402


def test_config_loads_from_toml_and_rejects_unknown_keys(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("seed = 3\n[optim]\nsteps = 10\n[loss]\nregion_image = 0.0\n[model.encoder]\nexpression_dim = 32\n")
    config = TrainConfig.load(path)
    assert (config.seed, config.optim.steps, config.loss.region_image) == (3, 10, 0.0)
    assert config.model.encoder.expression_dim == 32
    with pytest.raises(ValueError, match="unknown"):
        from_dict(TrainConfig, {"sed": 1})


def test_learning_rate_warms_up_then_decays():
    config = from_dict(TrainConfig, {"optim": {"steps": 100, "warmup_steps": 10, "min_lr_ratio": 0.1}}).optim
    factors = [lr_factor(s, config) for s in range(100)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(factors[10:], factors[11:]))
    assert factors[-1] == pytest.approx(0.1, abs=0.01)


def test_a_few_cpu_steps_reduce_the_loss_and_resume(synthetic_data, tmp_path):
    config = from_dict(TrainConfig, {
        "workers": 0, "threads": 1, "checkpoint_every": 100, "log_every": 5, "val_samples": 4,
        "optim": {"steps": 30, "batch_size": 8, "warmup_steps": 2, "learning_rate": 3e-3},
        "augment": {"occluder_probability": 0.0, "rotation_degrees": 0.0, "scale_jitter": 0.0, "shift_jitter": 0.0,
                    "mirror_probability": 0.0, "colour_probability": 0.0, "grey_probability": 0.0,
                    "blur_probability": 0.0},
    })
    run = tmp_path / "run"
    metrics = train(synthetic_data, config, run, max_samples=8)
    assert metrics["loss_end"] < 0.6 * metrics["loss_start"]
    assert (run / "last.pt").is_file() and json.loads((run / "metrics.json").read_text())["steps"] == 30
    assert any((run / "tb").iterdir())
    # A landmark calibration stored in the run's checkpoint survives a resume; a finished run trains no further.
    from training.checkpoint import store_landmark_calibration

    offsets = np.full((68, 3), 0.01, np.float32)
    version = torch.load(run / "last.pt", weights_only=True)["topology_version"]
    store_landmark_calibration(run / "last.pt", offsets, "a test set", topology_version=version, steps=30)
    again = train(synthetic_data, config, run, max_samples=8)
    assert again["steps"] == 30
    state = torch.load(run / "last.pt", weights_only=True)
    assert state["landmark_calibration"] == "a test set"
    np.testing.assert_array_equal(state["state_dict"]["landmark_offsets"].numpy(), offsets)


def test_the_command_trains_on_several_folders_with_pose_balanced_sampling(synthetic_data, tmp_path):
    from service.cli import main

    config = tmp_path / "mix.toml"
    config.write_text("workers = 0\nthreads = 1\nlog_every = 2\nval_samples = 2\n"
                      "[optim]\nsteps = 4\nbatch_size = 4\nwarmup_steps = 1\n[sampling]\npose_balanced = true\n")
    run = tmp_path / "run"
    assert main(["train", "--data", str(synthetic_data), "--data", str(synthetic_data), "--config", str(config),
                 "--out", str(run)]) == 0
    assert json.loads((run / "metrics.json").read_text())["steps"] == 4
    assert json.loads((run / "config.json").read_text())["sampling"]["pose_balanced"] is True
