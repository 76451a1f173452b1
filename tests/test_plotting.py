"""The shared figure helpers: ellipses, density grids and contours, the book style."""

import matplotlib

matplotlib.use("Agg")

import matplotlib as mpl  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from scipy import stats  # noqa: E402

from vicourse import plotting  # noqa: E402

MEAN = np.array([1.0, -0.5])
COV = np.array([[2.0, 0.9], [0.9, 1.0]])


@pytest.fixture
def ax():
    fig, axis = plt.subplots()
    yield axis
    plt.close(fig)


@pytest.mark.parametrize("n_std", [1.0, 2.0, 3.5])
def test_gaussian_ellipse_boundary_is_at_mahalanobis_distance_n_std(ax, n_std):
    # Independent route: every vertex of the drawn ellipse, mapped to data coordinates,
    # satisfies (x - m)^T Sigma^{-1} (x - m) = n_std^2; a wrong angle, a swapped axis or
    # a radius in variances instead of standard deviations breaks it.
    patch = plotting.gaussian_ellipse(ax, MEAN, COV, n_std=n_std, edgecolor="k")
    assert patch in ax.patches
    # The patch maps the unit circle to the ellipse in data coordinates.
    angles = np.linspace(0.0, 2 * np.pi, 37)
    unit_circle = np.column_stack([np.cos(angles), np.sin(angles)])
    vertices = patch.get_patch_transform().transform(unit_circle)
    diff = vertices - MEAN
    mahalanobis_sq = np.einsum("na,ab,nb->n", diff, np.linalg.inv(COV), diff)
    np.testing.assert_allclose(mahalanobis_sq, n_std**2, rtol=1e-10)
    # The ellipse of a Gaussian covers its (chi-square, 2 dof) probability: area pi n^2 sqrt|Sigma|.
    assert np.pi * patch.width * patch.height / 4 == pytest.approx(
        np.pi * n_std**2 * np.sqrt(np.linalg.det(COV)), rel=1e-12)
    assert patch.get_facecolor()[3] == 0.0  # unfilled by default


def test_density_grid_evaluates_the_log_density_at_each_grid_point():
    # An asymmetric density and unequal ranges, so a transposed grid cannot pass.
    target = stats.multivariate_normal(MEAN, COV)
    X, Y, Z = plotting.density_grid(target.logpdf, (-3.0, 4.0), (-2.0, 1.0), num=7)
    assert X.shape == Y.shape == Z.shape == (7, 7)
    np.testing.assert_allclose(X[0], np.linspace(-3.0, 4.0, 7))
    np.testing.assert_allclose(Y[:, 0], np.linspace(-2.0, 1.0, 7))
    for i, j in [(0, 0), (2, 5), (6, 1)]:
        assert Z[i, j] == pytest.approx(target.logpdf([X[i, j], Y[i, j]]), rel=1e-12)


@pytest.mark.parametrize("filled", [False, True])
def test_density_contours_are_at_fractions_of_the_maximum(ax, filled):
    target = stats.multivariate_normal(MEAN, COV)
    # A log-density shifted by 1000 would overflow exp; the levels are relative to the maximum.
    contours = plotting.density_contours(ax, lambda p: target.logpdf(p) + 1000.0, (-4, 6), (-4, 3),
                                         num=60, levels=4, filled=filled)
    np.testing.assert_allclose(contours.levels, np.linspace(0.05, 0.95, 4))
    assert contours.filled is filled


def test_use_book_style_sets_the_figure_defaults():
    with mpl.rc_context():
        mpl.rcParams["axes.grid"] = False
        plotting.use_book_style()
        assert mpl.rcParams["axes.grid"] is True
        assert mpl.rcParams["figure.figsize"][0] == plotting.COLUMN_WIDTH
        assert mpl.rcParams["axes.spines.top"] is False


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"mean": [0.0, 0.0, 0.0]}, r"mean must have shape \(2,\)"),
    ({"mean": [[0.0, 0.0]]}, "mean must be a 1-D array"),
    ({"mean": [0.0, np.nan]}, "mean must be finite"),
    ({"cov": np.eye(3)}, "cov must be 2 x 2"),
    ({"cov": np.eye(2)[None]}, r"cov must be one \(d, d\) matrix"),
    ({"cov": [[1.0, 2.0], [2.0, 1.0]]}, "cov must be positive definite"),
    ({"n_std": 0.0}, "n_std must be > 0"),
])
def test_gaussian_ellipse_rejects_bad_input(ax, kwargs, message):
    args = {"mean": MEAN, "cov": COV} | kwargs
    with pytest.raises(ValueError, match=message):
        plotting.gaussian_ellipse(ax, args.pop("mean"), args.pop("cov"), **args)


@pytest.mark.parametrize("bad_ax", [None, "ax", plt])
def test_helpers_refuse_something_that_is_not_an_axes(bad_ax):
    with pytest.raises(ValueError, match="ax must be a matplotlib Axes"):
        plotting.gaussian_ellipse(bad_ax, MEAN, COV)
    with pytest.raises(ValueError, match="ax must be a matplotlib Axes"):
        plotting.density_contours(bad_ax, stats.multivariate_normal(MEAN, COV).logpdf,
                                  (-3, 3), (-3, 3))


@pytest.mark.parametrize("xlim", [(0,), (1.0, 0.0), (np.nan, 1.0), (0.0, np.inf), "ab", None])
def test_density_grid_refuses_limits_that_are_not_an_increasing_pair(xlim):
    # (0,) used to build a 5 x 50 grid silently; NaN limits gave NaN grids.
    with pytest.raises(ValueError, match="xlim"):
        plotting.density_grid(stats.norm.logpdf, xlim, (0.0, 1.0), num=5)


def test_density_grid_names_a_log_density_that_returns_the_wrong_shape_or_nan():
    with pytest.raises(ValueError, match=r"log_density must map points of shape \(25, 2\)"):
        plotting.density_grid(lambda p: p, (0, 1), (0, 1), num=5)
    with pytest.raises(ValueError, match="log_density must return finite values or -inf"):
        plotting.density_grid(lambda p: np.full(len(p), np.nan), (0, 1), (0, 1), num=5)
    with pytest.raises(ValueError, match="log_density must be callable"):
        plotting.density_grid(None, (0, 1), (0, 1))


def test_book_style_palette_is_okabe_ito_on_an_opaque_background():
    plotting.use_book_style()
    colours = [c["color"] for c in mpl.rcParams["axes.prop_cycle"]]
    assert tuple(colours) == plotting.OKABE_ITO
    assert mpl.rcParams["figure.facecolor"] == "white" and mpl.rcParams["legend.frameon"]
