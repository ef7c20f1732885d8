"""Colour bands of the click map (docs/metrics.md): red (highest), orange, yellow, green,
blue (lowest non-zero), gray (no clicks). Every link also shows its number and the
legend states each band's threshold, so the map never depends on colour alone."""

from dataclasses import dataclass

BANDS = ("red", "orange", "yellow", "green", "blue")
NONE = "gray"

PALETTES = {
    # Diverging red→blue, as the commercial click maps use.
    "classic": {
        "red": "#d7301f",
        "orange": "#fc8d59",
        "yellow": "#fee08b",
        "green": "#91cf60",
        "blue": "#4575b4",
        "gray": "#9e9e9e",
    },
    # Viridis steps: distinguishable with any colour vision deficiency and in greyscale.
    "colourblind": {
        "red": "#440154",
        "orange": "#3b528b",
        "yellow": "#21918c",
        "green": "#5ec962",
        "blue": "#fde725",
        "gray": "#9e9e9e",
    },
}
# What each band's swatch looks like in each palette: the legend names the colour shown.
BAND_LABELS = {
    "classic": {
        "red": "Red",
        "orange": "Orange",
        "yellow": "Yellow",
        "green": "Green",
        "blue": "Blue",
        "gray": "Gray",
    },
    "colourblind": {
        "red": "Purple",
        "orange": "Blue",
        "yellow": "Teal",
        "green": "Green",
        "blue": "Yellow",
        "gray": "Gray",
    },
}


def band_labels(palette: str) -> dict[str, str]:
    """Band name -> the colour name its swatch shows in ``palette``."""
    return BAND_LABELS[palette]


@dataclass(frozen=True)
class Band:
    name: str
    low: float  # smallest value in the band
    high: float  # largest value in the band
    count: int


def colour_bands(values: dict[int, float]) -> tuple[dict[int, str], list[Band]]:
    """Band of every key by its value, and the bands' value ranges (highest first).

    Non-zero values are ranked and cut into five equal runs by rank; equal values
    always share a band (the band of their best rank). Zero is gray.
    """
    ranked = sorted((v for v in values.values() if v > 0), reverse=True)
    if not ranked:
        return {key: NONE for key in values}, []
    band_of_value = {}
    for position, value in enumerate(ranked):
        band_of_value.setdefault(value, BANDS[position * len(BANDS) // len(ranked)])
    assigned = {key: band_of_value.get(v, NONE) if v > 0 else NONE for key, v in values.items()}
    bands = []
    for name in BANDS:
        members = [v for v in ranked if band_of_value[v] == name]
        if members:
            bands.append(Band(name, min(members), max(members), len(members)))
    return assigned, bands
