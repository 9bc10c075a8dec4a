"""The shipped model keeps its measured accuracy on the AFLW2000-3D development slice."""

import numpy as np
import pytest

from model.runtime.detector import FaceDetector
from model.runtime.pipeline import FacePipeline
from model.runtime.reconstructor import DEFAULT_MODEL, FaceReconstructor
from tests.conftest import AFLW_DEV
from training.evaluate import evaluate_aflw
from training.export.landmark_calibration import calibrate, collect_samples, read_offsets

# Measured when the model was shipped (README model card), plus a small allowance for
# onnxruntime / numpy differences between machines.
SHIPPED_NME2D_0_30 = 2.982
SHIPPED_NME2D_BINMEAN = 4.528
SHIPPED_MIRROR_NME2D_BINMEAN = 4.344  # with mirror averaging
HELD_OUT_NME2D_BINMEAN = 4.555  # landmark offsets fitted without the scored image's fold
ALLOWANCE = 0.1


@pytest.mark.skipif(not DEFAULT_MODEL.is_file(), reason="no shipped model in model/weights")
def test_shipped_model_is_trained_for_the_installed_topology():
    reconstructor = FaceReconstructor(DEFAULT_MODEL, threads=1)
    assert reconstructor.metadata.trained
    assert reconstructor.metadata.training_steps > 0


@pytest.mark.skipif(not (AFLW_DEV / "gt.npz").is_file(), reason="needs ../shared/data/eval/aflw2000-3d-dev")
@pytest.mark.skipif(not DEFAULT_MODEL.is_file(), reason="no shipped model in model/weights")
def test_shipped_model_accuracy_on_the_frontal_bin_and_across_poses():
    metrics = evaluate_aflw(AFLW_DEV, FacePipeline(FaceReconstructor(DEFAULT_MODEL, threads=1), FaceDetector()),
                            boxes="gt")
    assert metrics["n"] == 123 and metrics["missing"] == 0
    assert metrics["nme2d_0_30"] <= SHIPPED_NME2D_0_30 + ALLOWANCE
    assert metrics["nme2d_binmean"] <= SHIPPED_NME2D_BINMEAN + ALLOWANCE


@pytest.mark.skipif(not (AFLW_DEV / "gt.npz").is_file(), reason="needs ../shared/data/eval/aflw2000-3d-dev")
@pytest.mark.skipif(not DEFAULT_MODEL.is_file(), reason="no shipped model in model/weights")
def test_mirror_averaging_is_more_accurate_in_every_bin():
    detector = FaceDetector()
    plain = evaluate_aflw(AFLW_DEV, FacePipeline(FaceReconstructor(DEFAULT_MODEL, threads=1), detector), boxes="gt")
    averaged = evaluate_aflw(AFLW_DEV, FacePipeline(FaceReconstructor(DEFAULT_MODEL, threads=1, mirror_average=True),
                                                    detector), boxes="gt")
    for key in ("nme2d_0_30", "nme2d_30_60", "nme2d_60_91"):
        assert averaged[key] < plain[key]
    assert averaged["nme2d_binmean"] <= SHIPPED_MIRROR_NME2D_BINMEAN + ALLOWANCE


@pytest.mark.skipif(not (AFLW_DEV / "gt.npz").is_file(), reason="needs ../shared/data/eval/aflw2000-3d-dev")
@pytest.mark.skipif(not DEFAULT_MODEL.is_file(), reason="no shipped model in model/weights")
def test_shipped_landmark_calibration_is_reproducible_and_holds_out_of_sample():
    """The shipped offsets are what `facerecon calibrate-landmarks` fits on the development slice
    (fitted on crops resized by Pillow; the runtime's OpenCV crop, model/runtime/crop.py, moves the
    fit by at most 0.17 mm of offsets up to 21 mm); scored with offsets fitted on the other folds
    only, the bin mean stays under the 5.0 target."""
    reconstructor = FaceReconstructor(DEFAULT_MODEL, threads=1)
    assert reconstructor.metadata.landmark_calibration == "aflw2000-3d-dev (123 images)"
    report = calibrate(collect_samples(AFLW_DEV, reconstructor), reconstructor.topology, read_offsets(DEFAULT_MODEL))
    np.testing.assert_allclose(report.offsets, read_offsets(DEFAULT_MODEL), atol=2.5e-4)
    assert report.held_out["nme2d_binmean"] <= HELD_OUT_NME2D_BINMEAN + ALLOWANCE
    assert report.uncalibrated["nme2d_binmean"] > report.held_out["nme2d_binmean"] + 0.5
