"""Individual Typology Angle of the skin around a lesion, with the lesion and hair left out."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image

from tests.helpers import NCI_PHOTO
from tests.synthetic import SKIN_TONES, make_lesion_photo
from webapp.cropping import square_region
from webapp.skin_tone import band_for, estimate_skin_tone, ita_degrees


def painted_ita(rgb) -> float:
    lab = cv2.cvtColor(np.array([[rgb]], dtype=np.float32) / 255.0, cv2.COLOR_RGB2LAB)[0, 0]
    return ita_degrees(float(lab[0]), float(lab[2]))


@pytest.mark.parametrize("seed,tone", list(enumerate(SKIN_TONES)))
def test_ita_matches_the_painted_skin_within_five_degrees(seed, tone):
    image, box = make_lesion_photo(seed, 1200, 900, skin_tone=tone, hair=True)
    estimate = estimate_skin_tone(image, box.as_list(), square_region(image.size, box).as_list())
    assert estimate is not None
    assert abs(estimate.ita - painted_ita(SKIN_TONES[tone])) < 5.0


def test_lesion_and_hair_are_excluded():
    # With the dark lesion counted as skin, the angle would fall; excluded, it does not move much.
    image, box = make_lesion_photo(3, 1000, 800, skin_tone="II", lesion_size=0.45, position=(0.5, 0.5), hair=True)
    region = square_region(image.size, box).as_list()
    without = estimate_skin_tone(image, box.as_list(), region)
    rgb = np.asarray(image, dtype=np.float32) / 255.0
    lab = cv2.cvtColor(rgb[max(0, region[1]):region[3], max(0, region[0]):region[2]], cv2.COLOR_RGB2LAB)
    naive = ita_degrees(float(lab[..., 0].mean()), float(lab[..., 2].mean()))
    truth = painted_ita(SKIN_TONES["II"])
    assert abs(without.ita - truth) < 5.0
    assert abs(naive - truth) > abs(without.ita - truth) + 5.0  # the naive mean is pulled down by the lesion


def test_bands_follow_del_bino():
    assert [band_for(value)[0] for value in (70, 50, 30, 20, 0, -50)] == [
        "very_light", "light", "intermediate", "tan", "brown", "dark"
    ]
    assert band_for(55.0)[0] == "light" and band_for(-30.0)[0] == "dark"  # bounds belong to the darker band


def test_the_nci_photo_reads_as_light_skin():
    if not NCI_PHOTO.exists():
        pytest.skip("the NCI test photo is not in shared/data")
    from webapp.interfaces import Box

    box = Box(410, 340, 1090, 800)
    with Image.open(NCI_PHOTO) as image:
        estimate = estimate_skin_tone(image.convert("RGB"), box.as_list(), square_region(image.size, box).as_list())
    assert estimate.band in {"very_light", "light"}
    assert estimate.as_dict()["band"] == estimate.band


def test_no_estimate_without_skin_to_measure():
    image = Image.new("RGB", (200, 200), (200, 150, 120))
    assert estimate_skin_tone(image, (0, 0, 200, 200)) is None
