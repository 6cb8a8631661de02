import numpy as np
import pytest

from astroclip_pipeline.evaluate.rgb import legacysurvey_rgb
from astroclip_pipeline.files import atomic_path


def test_viewer_rgb_planes_and_range():
    image = np.zeros((3, 8, 8))
    image[0] = 0.5  # only g: the blue plane
    rgb = legacysurvey_rgb(image)
    assert rgb.shape == (8, 8, 3) and rgb.min() >= 0 and rgb.max() <= 1
    assert rgb[0, 0, 2] > rgb[0, 0, 1] == pytest.approx(rgb[0, 0, 0])
    # a bright source saturates to white-ish, never beyond 1
    assert np.all(legacysurvey_rgb(np.full((3, 2, 2), 1e4)) == 1.0)


def test_viewer_rgb_rejects_wrong_shape():
    with pytest.raises(ValueError, match="expected an image of shape"):
        legacysurvey_rgb(np.zeros((8, 8, 3)))


def test_atomic_path_keeps_old_file_on_failure(tmp_path):
    target = tmp_path / "result.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash mid-write")
    assert target.read_text() == "old"
    assert list(tmp_path.iterdir()) == [target]
    with atomic_path(target) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new"
