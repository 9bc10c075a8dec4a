import numpy as np

from model.runtime.detector import BoxCalibration
from training.tools.detector_calibration import LabelledBoxes, fit_boxes, paste_into_canvas


def test_fit_recovers_a_known_calibration_exactly():
    rng = np.random.default_rng(0)
    centres = rng.uniform(50, 500, (40, 2))
    sides = rng.uniform(20, 300, (40, 1))
    detected = np.concatenate([centres - sides / 2, centres + sides / 2], axis=1)
    truth = BoxCalibration(centre_x=0.01, centre_y=0.06, width=0.9, height=0.87)
    fit = fit_boxes(LabelledBoxes(detected, truth.apply(detected)))
    assert fit.views == 40
    np.testing.assert_allclose([fit.calibration.centre_x, fit.calibration.centre_y, fit.calibration.width,
                                fit.calibration.height], [0.01, 0.06, 0.9, 0.87], atol=1e-9)
    assert fit.residual_centre < 1e-9 and fit.residual_size < 1e-9
    assert fit.mean_iou > 0.999 > fit.mean_iou_raw


def test_pasted_photo_keeps_its_face_box():
    rng = np.random.default_rng(1)
    photo = np.zeros((170, 170, 3), np.uint8)
    photo[40:130, 50:120] = 255  # the "face"
    for _ in range(5):
        canvas, box = paste_into_canvas(photo, np.array([50.0, 40.0, 120.0, 130.0]), rng)
        assert canvas.shape == (480, 640, 3)
        x1, y1, x2, y2 = np.round(box).astype(int)
        assert canvas[y1 + 3 : y2 - 3, x1 + 3 : x2 - 3].min() >= 240
        assert canvas[y1 - 4, (x1 + x2) // 2].max() < 30 and canvas[y2 + 3, (x1 + x2) // 2].max() < 30
        assert 0.1 * 640 - 1 <= x2 - x1 <= 0.6 * 640 + 1
