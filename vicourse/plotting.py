"""Figure helpers shared by the chapters.

A chapter that needs a plot another chapter also draws calls these instead of
defining its own.  Each helper draws on an axis it is given and returns it.
"""

from __future__ import annotations

import matplotlib as mpl
import numpy as np
from matplotlib.patches import Ellipse

from vicourse._validation import as_float_array, check_positive, check_spd


def use_book_style() -> None:
    """Set the figure defaults every chapter uses (size, resolution, grid)."""
    mpl.rcParams.update({
        "figure.figsize": (6.4, 4.0),
        "figure.dpi": 100,
        "savefig.dpi": 100,
        "axes.grid": True,
        "grid.alpha": 0.3,
        "axes.spines.top": False,
        "axes.spines.right": False,
        "legend.frameon": False,
    })


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
    """
    mean = as_float_array(mean, "mean", ndim=1)
    cov = check_spd(cov, "cov", dim=2)
    if mean.shape != (2,):
        raise ValueError(f"mean must have shape (2,); got {mean.shape}")
    n_std = check_positive(n_std, "n_std")
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
        Maps an array of points of shape (m, 2) to m log-density values.
    xlim, ylim : (float, float)
    num : int
        Grid points per axis.

    Returns
    -------
    X, Y, Z : arrays of shape (num, num)
        The grid and the log-density on it.
    """
    xs = np.linspace(*xlim, num)
    ys = np.linspace(*ylim, num)
    X, Y = np.meshgrid(xs, ys)
    points = np.column_stack([X.ravel(), Y.ravel()])
    Z = np.asarray(log_density(points), dtype=float).reshape(X.shape)
    return X, Y, Z


def density_contours(ax, log_density, xlim, ylim, *, num: int = 200, levels: int = 6,
                     filled: bool = False, **kwargs):
    """Contours of ``exp(log_density)`` over a rectangle, drawn on ``ax``.

    Levels are spaced evenly in density between 5% and 95% of its maximum on
    the grid, so that shapes on different axes are comparable.

    Returns
    -------
    matplotlib.contour.QuadContourSet
    """
    X, Y, Z = density_grid(log_density, xlim, ylim, num=num)
    density = np.exp(Z - Z.max())
    contour = ax.contourf if filled else ax.contour
    return contour(X, Y, density, levels=np.linspace(0.05, 0.95, levels), **kwargs)
