"""Given codes: weights derived from which codes are given, the graph's feeds, and requests stacked for one run."""

import numpy as np
import pytest

from model.onnx_contract import GIVEN_CODE_INPUTS, GIVEN_WEIGHTS
from model.runtime.codes import FaceCodes, GivenCodes

DEFAULTS = {name: np.zeros((1, *shape), np.float32)
            for name, shape in zip(GIVEN_CODE_INPUTS, ((128,), (64,), (10,), (64,), (9, 3)))}


def test_weights_are_one_where_a_code_is_given():
    given = GivenCodes(expression=np.ones((1, 64)), lighting=np.ones((1, 9, 3)))
    np.testing.assert_array_equal(given.weight_matrix(), [[0, 1, 0, 0, 1]])
    feeds = given.feeds(DEFAULTS, count=3)
    assert feeds.keys() == {*GIVEN_CODE_INPUTS, GIVEN_WEIGHTS}
    assert feeds["given_identity_code"] is DEFAULTS["given_identity_code"]
    assert feeds["given_expression_code"].dtype == np.float32


def test_codes_of_the_wrong_size_or_row_count_are_refused():
    with pytest.raises(ValueError, match="takes"):
        GivenCodes(expression=np.ones((1, 32))).feeds(DEFAULTS, count=1)
    with pytest.raises(ValueError, match="for 2 crops, the run has 3"):
        GivenCodes(identity=np.ones((2, 128))).feeds(DEFAULTS, count=3)
    with pytest.raises(ValueError, match="different row counts"):
        GivenCodes(identity=np.ones((2, 128)), expression=np.ones((3, 64)))


def test_stacked_requests_give_each_crop_its_own_codes_and_plain_crops_weight_zero():
    expression = np.arange(64, dtype=np.float32)[None]
    identity = np.ones((2, 128), np.float32)
    stacked = GivenCodes.stack([(2, None), (3, GivenCodes(expression=expression)), (2, GivenCodes(identity=identity))])
    assert stacked is not None and stacked.rows == 7
    expected = [[0] * 5] * 2 + [[0, 1, 0, 0, 0]] * 3 + [[1, 0, 0, 0, 0]] * 2
    np.testing.assert_array_equal(stacked.weight_matrix(), expected)
    np.testing.assert_array_equal(stacked.expression[2:5], np.repeat(expression, 3, axis=0))
    assert not stacked.expression[[0, 1, 5, 6]].any()
    np.testing.assert_array_equal(stacked.identity[5:], identity)
    assert stacked.pose is None and stacked.albedo is None and stacked.lighting is None
    assert GivenCodes.stack([(2, None), (1, None)]) is None


def test_a_faces_codes_are_the_blend_it_was_decoded_with():
    out = {"identity_code": np.zeros((2, 128), np.float32), "expression_code": np.ones((2, 64), np.float32),
           "pose_code": np.zeros((2, 10), np.float32), "albedo_code": np.zeros((2, 64), np.float32),
           "lighting": np.full((2, 9, 3), 0.5, np.float32)}
    given = GivenCodes(expression=np.full((1, 64), 3.0), weights=np.array([[0, 0.5, 0, 0, 0]] * 2))
    codes = FaceCodes.from_outputs(out, 1, given)
    np.testing.assert_allclose(codes.expression, 2.0)  # 1 + 0.5 * (3 - 1)
    np.testing.assert_array_equal(codes.identity, out["identity_code"][1])
    np.testing.assert_array_equal(FaceCodes.from_outputs(out, 1).expression, out["expression_code"][1])
