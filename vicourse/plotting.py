"""Figure helpers shared by the chapters, and the book's figure style.

A chapter that needs a plot another chapter also draws calls these instead of
defining its own.  Each helper draws on an axis it is given and returns what
it drew.

The style (:func:`use_book_style`) follows the book's figure rules
(CONTRIBUTING.md): figures are made at the width the page shows them, so text
stays at least 80 % of the body text's size; colours come from the Okabe–Ito
palette, which stays distinguishable under the common colour-vision
deficiencies; figures have an opaque white background, so they stay legible
in the theme's dark mode; and legends have a frame, for the rare case where
no empty corner is left for them.
"""

from __future__ import annotations

import matplotlib as mpl
import numpy as np
import torch
from cycler import cycler
from matplotlib.axes import Axes
from matplotlib.patches import Ellipse

from vicourse._validation import (
    _describe,
    as_float_array,
    check_bool,
    check_callable,
    check_int,
    check_positive,
    check_spd,
)

__all__ = ["OKABE_ITO", "density_contours", "density_grid", "gaussian_ellipse", "use_book_style"]

#: Okabe and Ito's colour-blind-safe palette (black dropped: it is the text colour),
#: in the order the book's figures use it: blue, vermillion, bluish green, orange,
#: reddish purple, sky blue, yellow.
OKABE_ITO = ("#0072B2", "#D55E00", "#009E73", "#E69F00", "#CC79A7", "#56B4E9", "#F0E442")

#: The width of the book's text column in inches at the figures' 100 dpi: a figure
#: of this width is shown at its natural size, so its text is not shrunk.
COLUMN_WIDTH = 7.0


def use_book_style() -> None:
    """Set the figure defaults every chapter uses (size, fonts, colours, legends).

    A 7 x 4.2 inch figure at 100 dpi is 700 px wide, the width of the book's
    text column, so an 11 pt label is shown at about 15 px against the body
    text's 16 px.
    """
    mpl.rcParams.update({
        "figure.figsize": (COLUMN_WIDTH, 4.2),
        "figure.dpi": 100,
        "savefig.dpi": 100,
        "figure.facecolor": "white",
        "savefig.facecolor": "white",
        "axes.facecolor": "white",
        "font.size": 11,
        "axes.titlesize": 11,
        "axes.labelsize": 11,
        "xtick.labelsize": 10.5,
        "ytick.labelsize": 10.5,
        "legend.fontsize": 10.5,
        "axes.prop_cycle": cycler(color=list(OKABE_ITO)),
        "image.cmap": "viridis",
        "lines.linewidth": 1.8,
        "axes.grid": True,
        "grid.alpha": 0.3,
        "axes.spines.top": False,
        "axes.spines.right": False,
        "legend.frameon": True,
        "legend.framealpha": 0.9,
        "legend.edgecolor": "0.8",
        "legend.fancybox": False,
    })


def _check_ax(ax) -> Axes:
    if not isinstance(ax, Axes):
        raise ValueError(f"ax must be a matplotlib Axes (e.g. from plt.subplots()); got {_describe(ax)}")
    return ax


def _check_limits(value, name: str) -> tuple[float, float]:
    limits = as_float_array(value, name, ndim=1)
    if limits.shape != (2,) or not limits[0] < limits[1]:
        raise ValueError(f"{name} must be two finite numbers (low, high) with low < high; "
                         f"got {_describe(value)}")
    return float(limits[0]), float(limits[1])


def gaussian_ellipse(ax, mean, cov, *, n_std: float = 2.0, **kwargs):
    """Draw the ``n_std``-standard-deviation ellipse of a 2-D Gaussian on ``ax``.

    Parameters
    ----------
    ax : matplotlib.axes.Axes
    mean : array of shape (2,)
    cov : array of shape (2, 2), symmetric positive definite
    n_std : float, > 0
        Radius in standard deviations (Mahalanobis distance).
    **kwargs
        Passed to :class:`matplotlib.patches.Ellipse` (``edgecolor``, ``label``, ...).

    Returns
    -------
    matplotlib.patches.Ellipse

    Raises
    ------
    ValueError
        If ``ax`` is not an Axes, ``mean`` is not a finite 2-vector, ``cov`` is
        not a symmetric positive definite 2 x 2 matrix or ``n_std`` is not > 0.
    """
    ax = _check_ax(ax)
    mean = as_float_array(mean, "mean", ndim=1)
    cov = check_spd(cov, "cov", dim=2, single=True)
    if mean.shape != (2,):
        raise ValueError(f"mean must have shape (2,); got {mean.shape}")
    n_std = check_positive(n_std, "n_std")
    if np.ndim(n_std) != 0:
        raise ValueError(f"n_std must be a scalar; got shape {np.shape(n_std)}")
    eigvals, eigvecs = np.linalg.eigh(cov)
    angle = np.degrees(np.arctan2(eigvecs[1, -1], eigvecs[0, -1]))
    width, height = 2 * n_std * np.sqrt(eigvals[::-1])
    kwargs.setdefault("facecolor", "none")
    patch = Ellipse(mean, width, height, angle=angle, **kwargs)
    ax.add_patch(patch)
    return patch


def density_grid(log_density, xlim, ylim, *, num: int = 200):
    """Evaluate a 2-D log-density on a regular grid.

    Parameters
    ----------
    log_density : callable
        Maps an array of points of shape (m, 2) to m log-density values (a
        NumPy array or a torch tensor); ``-inf`` (zero density) is allowed.
        It receives a float64 NumPy array; wrap a torch log-density as
        ``lambda p: f(torch.from_numpy(p))``.
    xlim, ylim : (float, float)
        The rectangle, each as (low, high) with low < high.
    num : int, >= 2
        Grid points per axis.

    Returns
    -------
    X, Y, Z : arrays of shape (num, num)
        The grid and the log-density on it.

    Raises
    ------
    ValueError
        If a limit is not an increasing pair of finite numbers, ``num`` is not
        an integer in [2, 4000], or ``log_density`` is not callable or returns
        the wrong shape, NaN or ``+inf``.
    """
    check_callable(log_density, "log_density")
    xlim = _check_limits(xlim, "xlim")
    ylim = _check_limits(ylim, "ylim")
    num = check_int(num, "num", minimum=2, maximum=4000)
    X, Y = np.meshgrid(np.linspace(*xlim, num), np.linspace(*ylim, num))
    points = np.column_stack([X.ravel(), Y.ravel()])
    values = log_density(points)
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    try:
        Z = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"log_density must return numbers; got {_describe(values)}") from None
    if Z.shape != (points.shape[0],):
        raise ValueError(f"log_density must map points of shape {points.shape} to shape "
                         f"({points.shape[0]},); got shape {Z.shape}")
    if np.any(np.isnan(Z) | np.isposinf(Z)):
        raise ValueError("log_density must return finite values or -inf; got NaN or +inf")
    return X, Y, Z.reshape(X.shape)


def density_contours(ax, log_density, xlim, ylim, *, num: int = 200, levels: int = 6,
                     filled: bool = False, **kwargs):
    """Contours of ``exp(log_density)`` over a rectangle, drawn on ``ax``.

    Levels are spaced evenly in density between 5% and 95% of its maximum on
    the grid, so that shapes on different axes are comparable.

    Parameters
    ----------
    ax : matplotlib.axes.Axes
    log_density, xlim, ylim, num
        As in :func:`density_grid`.
    levels : int, >= 1
        Number of contour levels.
    filled : bool
        Filled contours (``contourf``) instead of lines.
    **kwargs
        Passed to :meth:`~matplotlib.axes.Axes.contour` or ``contourf``.

    Returns
    -------
    matplotlib.contour.QuadContourSet

    Raises
    ------
    ValueError
        As :func:`density_grid`, or if ``ax`` is not an Axes, ``levels`` is
        not a positive integer, ``filled`` is not a bool, or the density is
        zero everywhere on the grid.
    """
    ax = _check_ax(ax)
    levels = check_int(levels, "levels", minimum=1, maximum=100)
    filled = check_bool(filled, "filled")
    X, Y, Z = density_grid(log_density, xlim, ylim, num=num)
    if not np.isfinite(Z.max()):
        raise ValueError("log_density is -inf on the whole grid: nothing to draw; "
                         "move xlim and ylim to where the density lives")
    density = np.exp(Z - Z.max())
    contour = ax.contourf if filled else ax.contour
    return contour(X, Y, density, levels=np.linspace(0.05, 0.95, levels), **kwargs)
