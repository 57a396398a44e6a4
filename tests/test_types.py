"""Detections: construction, indexing, concatenation and the contract's box formats."""

from __future__ import annotations

import numpy as np
import pytest

from edge.types import Detections


def make(n: int = 3) -> Detections:
    xyxy = np.array([[10, 20, 50, 80], [0.4, 0.6, 9.5, 10.49], [100, 100, 90, 120]], np.float64)
    return Detections(
        xyxy=xyxy[:n],
        scores=np.array([0.9, 0.5, 0.7])[:n],
        class_ids=np.array([0, 2, 1])[:n],
        data={"track_ids": np.array([7, 8, 9])[:n]},
    )


def test_dtypes_are_normalised() -> None:
    d = make()
    assert d.xyxy.dtype == np.float32 and d.xyxy.shape == (3, 4)
    assert d.scores.dtype == np.float32 and d.class_ids.dtype == np.int32
    assert len(d) == 3


def test_empty() -> None:
    e = Detections.empty(data_keys=("track_ids",))
    assert len(e) == 0 and e.xyxy.shape == (0, 4) and e.data["track_ids"].shape == (0,)
    assert e.to_tlbr_ints() == [] and e.to_ltwh_dicts() == []
    assert len(e[np.zeros(0, bool)]) == 0
    # An empty list is accepted as zero boxes.
    assert len(Detections(xyxy=[], scores=[], class_ids=[])) == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"xyxy": np.zeros((2, 3)), "scores": [1, 1], "class_ids": [0, 0]}, "shape"),
        ({"xyxy": np.zeros((2, 4)), "scores": [1], "class_ids": [0, 0]}, "length mismatch"),
        ({"xyxy": np.zeros((2, 4)), "scores": [1, 1], "class_ids": [0]}, "length mismatch"),
        (
            {
                "xyxy": np.zeros((2, 4)),
                "scores": [1, 1],
                "class_ids": [0, 0],
                "data": {"t": np.zeros(3)},
            },
            "data['t']",
        ),
    ],
)
def test_bad_shapes_rejected(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("[", r"\[")):
        Detections(**kwargs)  # type: ignore[arg-type]


def test_boolean_int_slice_indexing_keeps_parallel_arrays() -> None:
    d = make()
    m = d[d.scores > 0.6]
    assert m.data["track_ids"].tolist() == [7, 9]
    assert m.class_ids.tolist() == [0, 1]
    i = d[np.array([2, 0])]
    assert i.data["track_ids"].tolist() == [9, 7]
    np.testing.assert_array_equal(i.xyxy[1], d.xyxy[0])
    one = d[1]
    assert len(one) == 1 and one.class_ids.tolist() == [2]
    assert d[1:].scores.tolist() == pytest.approx([0.5, 0.7])
    assert [len(x) for x in d] == [1, 1, 1]


def test_concatenate_keeps_common_data_only() -> None:
    a = make(2)
    b = Detections(xyxy=np.ones((1, 4)), scores=[0.1], class_ids=[5])
    c = Detections.concatenate([a, b])
    assert len(c) == 3 and c.class_ids.tolist() == [0, 2, 5] and c.data == {}
    both = Detections.concatenate([a, a])
    assert both.data["track_ids"].tolist() == [7, 8, 7, 8]
    assert len(Detections.concatenate([])) == 0


def test_with_data_and_area_and_clip() -> None:
    d = make().with_data(colour_ids=np.array([1, 2, 3]))
    assert set(d.data) == {"track_ids", "colour_ids"}
    assert d.area.tolist() == pytest.approx([40 * 60, 9.1 * 9.89, 0.0], rel=1e-5)
    clipped = d.clip(width=40, height=50)
    assert clipped.xyxy[0].tolist() == [10, 20, 40, 50]
    assert clipped.data["colour_ids"].tolist() == [1, 2, 3]


def test_contract_box_formats_round_to_ints() -> None:
    d = make(2)
    # [top, left, bottom, right] for hard-hat/workwear
    assert d.to_tlbr_ints() == [[20, 10, 80, 50], [1, 0, 10, 10]]
    # {left, top, width, height} for the fence
    assert d.to_ltwh_dicts() == [
        {"left": 10, "top": 20, "width": 40, "height": 60},
        {"left": 0, "top": 1, "width": 10, "height": 9},
    ]
    for item in d.to_ltwh_dicts():
        assert all(type(v) is int for v in item.values())
    # An inverted box never gets a negative width.
    assert make()[2].to_ltwh_dicts()[0]["width"] == 0
