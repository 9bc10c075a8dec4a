"""The shared words: box text, boxes of points, face selection and mesh space, crop NDC -> pixels."""

from __future__ import annotations

import numpy as np
import pytest

from model.conventions import FaceSelection, MeshSpace, box_area, ndc_to_pixels, parse_box, points_box


def test_parse_box_reads_four_finite_numbers():
    assert parse_box(" 10, 20.5,300 ,400") == (10.0, 20.5, 300.0, 400.0)
    assert parse_box("-5,-5,1e2,100") == (-5.0, -5.0, 100.0, 100.0)


@pytest.mark.parametrize("text", ["1,2,3", "1,2,3,4,5", "1..2,3,400,400", ".,0,400,400", "a,b,c,d", "",
                                  "0,0,inf,400", "-inf,0,400,400", "nan,0,400,400", "0,0,1e400,400"])
def test_parse_box_refuses_what_is_not_four_finite_numbers(text):
    with pytest.raises(ValueError, match="four numbers"):
        parse_box(text)


def test_parse_box_refuses_an_empty_box_and_quotes_at_most_64_characters():
    with pytest.raises(ValueError, match="x1 < x2"):
        parse_box("10,10,10,20")
    with pytest.raises(ValueError) as err:
        parse_box("1," * 1000)
    assert len(str(err.value)) < 160


def test_points_box_and_area():
    points = np.array([[3.0, 4.0, 9.0], [1.0, 8.0, -2.0], [2.0, 6.0, 0.0]])
    assert points_box(points) == (1.0, 4.0, 3.0, 8.0)
    assert box_area(points_box(points)) == pytest.approx(8.0)


def test_words_have_one_spelling():
    assert [s.value for s in FaceSelection] == ["largest", "all"]
    assert [s.value for s in MeshSpace] == ["image", "canonical", "neutral"]
    assert FaceSelection("all") is FaceSelection.all and MeshSpace("neutral") == "neutral"


def test_ndc_to_pixels_corners_and_depth():
    ndc = np.array([[-1.0, 1.0, 0.0], [1.0, -1.0, 0.5], [0.0, 0.0, -1.0]], np.float32)
    np.testing.assert_allclose(ndc_to_pixels(ndc, 200), [[0.0, 0.0, 0.0], [200.0, 200.0, 50.0], [100.0, 100.0, -100.0]])
