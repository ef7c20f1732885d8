"""Colour bands: ranked into five runs, ties share a band, zero is gray, thresholds stated."""

from clickmap.bands import BANDS, colour_bands


def test_ten_values_fall_two_per_band_highest_red():
    values = {i: float(v) for i, v in enumerate([10, 9, 8, 7, 6, 5, 4, 3, 2, 1])}
    assigned, bands = colour_bands(values)
    assert [assigned[i] for i in range(10)] == [b for b in BANDS for _ in range(2)]
    assert [(b.name, b.low, b.high) for b in bands] == [
        ("red", 9, 10),
        ("orange", 7, 8),
        ("yellow", 5, 6),
        ("green", 3, 4),
        ("blue", 1, 2),
    ]


def test_zero_is_gray_and_ties_share_the_best_band():
    assigned, bands = colour_bands({1: 5.0, 2: 5.0, 3: 5.0, 4: 0.0, 5: 1.0})
    assert assigned == {1: "red", 2: "red", 3: "red", 4: "gray", 5: "green"}
    assert sum(b.count for b in bands) == 4


def test_no_clicks_at_all_is_all_gray_without_bands():
    assert colour_bands({1: 0, 2: 0}) == ({1: "gray", 2: "gray"}, [])


def test_a_single_clicked_link_is_red():
    assigned, bands = colour_bands({1: 0.5, 2: 0})
    assert assigned == {1: "red", 2: "gray"} and bands[0].name == "red"
