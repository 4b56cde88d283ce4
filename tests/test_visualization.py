import numpy as np
import pytest
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure

from captum_robust.visualization import plot_attributions, save_figure


def _images(b=5, c=1, h=12, w=12):
    return torch.rand(b, c, h, w, generator=torch.Generator().manual_seed(0))


def _maps(b=5, h=3, w=3, seed=1):
    return torch.randn(b, 1, h, w, generator=torch.Generator().manual_seed(seed))


def test_grid_has_rows_times_columns_axes():
    fig = plot_attributions(_images(), {"a": _maps(), "b": _maps(seed=2)}, max_examples=3)
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 3 * 3
    # fewer examples than max_examples: one row per example
    fig = plot_attributions(_images(b=2), {"a": _maps(b=2)}, max_examples=8)
    assert len(fig.axes) == 2 * 2


def test_overlay_is_bilinear_upsampled_map_and_input_is_scaled():
    x = _images(b=2, h=12, w=8)
    m = _maps(b=2, h=3, w=2)
    fig = plot_attributions(x, {"m": m.squeeze(1)})  # B x H' x W' accepted
    ax_img, ax_map = fig.axes[0], fig.axes[1]
    shown = np.asarray(ax_img.images[0].get_array())
    expected_img = (x[0, 0] - x[0, 0].min()) / (x[0, 0].max() - x[0, 0].min())
    np.testing.assert_allclose(shown, expected_img.numpy(), rtol=1e-6, atol=1e-6)
    overlay = np.asarray(ax_map.images[1].get_array())
    expected = F.interpolate(m.double(), size=(12, 8), mode="bilinear", align_corners=False)[0, 0]
    assert overlay.shape == (12, 8)
    np.testing.assert_allclose(overlay, expected.numpy(), rtol=1e-6, atol=1e-8)
    # the second row shows the second example's map
    overlay2 = np.asarray(fig.axes[3].images[1].get_array())
    expected2 = F.interpolate(m.double(), size=(12, 8), mode="bilinear", align_corners=False)[1, 0]
    np.testing.assert_allclose(overlay2, expected2.numpy(), rtol=1e-6, atol=1e-8)


def test_rgb_images_and_titles():
    x = _images(b=2, c=3)
    fig = plot_attributions(
        x, {"CAM": _maps(b=2), "Grad-CAM": _maps(b=2, seed=3)}, labels=torch.tensor([3, 1]), predictions=[3, 7]
    )
    axes = fig.axes
    assert np.asarray(axes[0].images[0].get_array()).shape == (12, 12, 3)
    assert axes[1].get_title() == "CAM" and axes[2].get_title() == "Grad-CAM"
    assert axes[0].get_title() == "label 3, pred 3"
    assert axes[3].get_title() == "label 1, pred 7"
    # a wrong prediction is titled in red, a right one in black
    assert axes[3].title.get_color() == "red"
    assert axes[0].title.get_color() == "black"


@pytest.mark.parametrize(
    "maps, match",
    [
        ({"all classes": torch.rand(5, 10, 3, 3)}, "one map per example"),
        ({"wrong batch": torch.rand(4, 1, 3, 3)}, "4 maps but images has 5"),
        ({"flat": torch.rand(5, 9)}, "B x 1 x H' x W'"),
        ({"5d": torch.rand(5, 1, 1, 3, 3)}, "B x 1 x H' x W'"),
        ({"nan": torch.full((5, 1, 3, 3), float("nan"))}, "NaN"),
        ({}, "empty"),
    ],
)
def test_bad_maps_raise_value_error(maps, match):
    with pytest.raises(ValueError, match=match):
        plot_attributions(_images(), maps)


def test_bad_images_labels_and_options_raise_value_error():
    m = {"a": _maps()}
    with pytest.raises(ValueError, match="images must have shape"):
        plot_attributions(torch.rand(5, 2, 12, 12), m)
    with pytest.raises(ValueError, match="images must have shape"):
        plot_attributions(torch.rand(12, 12), m)
    with pytest.raises(ValueError, match="labels must have one entry per example"):
        plot_attributions(_images(), m, labels=[1, 2])
    with pytest.raises(ValueError, match="max_examples"):
        plot_attributions(_images(), m, max_examples=0)
    with pytest.raises(ValueError, match="alpha"):
        plot_attributions(_images(), m, alpha=1.5)
    with pytest.raises(TypeError):
        plot_attributions(_images(), [_maps()])


def test_save_figure_writes_png_and_creates_parents(tmp_path):
    fig = plot_attributions(_images(b=2, h=8, w=8), {"m": _maps(b=2)}, panel_size=1.0)
    path = save_figure(fig, tmp_path / "a" / "b" / "fig.png", dpi=50)
    assert path == tmp_path / "a" / "b" / "fig.png"
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    # PNG IHDR: width and height follow the figure size (2 x 1 in + 0.3 in title margin) at 50 dpi
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (100, round(2.3 * 50))


def test_save_figure_into_a_file_parent_fails(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    fig = plot_attributions(_images(b=1), {"m": _maps(b=1)})
    with pytest.raises(OSError):
        save_figure(fig, blocker / "fig.png")
