"""The Gaussian variational family, shared by every chapter that fits one.

One vocabulary (CONTRIBUTING.md): a Gaussian is given by ``loc`` (d,) and
``scale_tril`` (d, d), lower triangular with a positive diagonal, the names of
:class:`torch.distributions.MultivariateNormal`; the family is chosen with
``covariance_type="full"`` or ``"diag"``, the names of scikit-learn's
mixtures; and every routine that fits one returns a :class:`GaussianFit`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.distributions import constraints, transform_to

from vicourse._validation import as_float_array, check_choice

__all__ = ["COVARIANCE_TYPES", "GaussianFit", "check_covariance_type", "check_loc_matrix",
           "check_loc_scale_tril", "scale_tril_from_unconstrained", "unconstrained_from_scale_tril"]

#: The two Gaussian families: a full covariance, or a diagonal one (mean field).
COVARIANCE_TYPES = ("full", "diag")


def check_covariance_type(covariance_type) -> str:
    """Check that ``covariance_type`` is ``"full"`` or ``"diag"``."""
    return check_choice(covariance_type, "covariance_type", COVARIANCE_TYPES)


def check_loc_matrix(loc, matrix, loc_name: str, matrix_name: str) -> tuple[np.ndarray, np.ndarray]:
    """A Gaussian's ``loc`` (d,) and one of its (d, d) matrices (``scale_tril``,
    ``covariance_matrix``) as float64 arrays of matching shapes; the matrix is not checked further."""
    loc = as_float_array(loc, loc_name, ndim=1)
    matrix = as_float_array(matrix, matrix_name, ndim=2)
    d = loc.shape[0]
    if matrix.shape != (d, d):
        raise ValueError(f"{matrix_name} must have shape ({d}, {d}) to match {loc_name} of shape "
                         f"({d},); got shape {matrix.shape}")
    return loc, matrix


def check_loc_scale_tril(loc, scale_tril, covariance_type: str = "full",
                         *, names=("loc", "scale_tril")) -> tuple[np.ndarray, np.ndarray]:
    """Validate a Gaussian given as ``loc`` (d,) and ``scale_tril`` (d, d); return float64 arrays.

    ``scale_tril`` must be lower triangular with a positive diagonal, and
    diagonal when ``covariance_type="diag"``.
    """
    loc_name, tril_name = names
    loc, tril = check_loc_matrix(loc, scale_tril, loc_name, tril_name)
    if np.any(np.triu(tril, 1) != 0):
        raise ValueError(f"{tril_name} must be lower triangular; got non-zero entries above "
                         "the diagonal")
    if np.any(np.diag(tril) <= 0):
        raise ValueError(f"{tril_name} must have a positive diagonal; smallest diagonal entry "
                         f"is {np.diag(tril).min():.3g}")
    if check_covariance_type(covariance_type) == "diag" and np.any(np.tril(tril, -1) != 0):
        raise ValueError(f"{tril_name} must be diagonal for covariance_type='diag'")
    return loc, tril


#: :math:`\tilde L \mapsto L`: exp on the diagonal, identity below it (torch's own transform).
_LOWER_CHOLESKY = transform_to(constraints.lower_cholesky)


def unconstrained_from_scale_tril(scale_tril: torch.Tensor, covariance_type: str) -> torch.Tensor:
    r"""The one unconstrained parameterisation of ``scale_tril`` (CONTRIBUTING.md).

    ``"full"``: :math:`L` with its diagonal replaced by :math:`\log L_{ii}`, shape
    (..., d, d), the inverse of
    ``torch.distributions.transform_to(constraints.lower_cholesky)``;
    ``"diag"``: the log standard deviations :math:`\log L_{ii}`, shape (..., d).
    Gradients with respect to a Gaussian's scale are taken in this parameterisation.
    """
    if covariance_type == "diag":
        return scale_tril.diagonal(dim1=-2, dim2=-1).log()
    return _LOWER_CHOLESKY.inv(scale_tril)


def scale_tril_from_unconstrained(param: torch.Tensor, covariance_type: str) -> torch.Tensor:
    """:math:`L` from its unconstrained parameter; the inverse of :func:`unconstrained_from_scale_tril`.

    Batched: ``param`` of shape (..., d) for ``"diag"`` or (..., d, d) for
    ``"full"`` gives ``scale_tril`` of shape (..., d, d).
    """
    if covariance_type == "diag":
        return torch.diag_embed(param.exp())
    return _LOWER_CHOLESKY(param)


@dataclass(frozen=True)
class GaussianFit:
    r"""A fitted Gaussian :math:`q = \mathcal N(\mu, L L^\top)`: the one result type for it.

    Returned by every routine that fits a Gaussian: black-box VI
    (:func:`vicourse.vi.fit_gaussian`), the projections of Chapter 4
    (:func:`vicourse.kl.i_projection`, :func:`vicourse.kl.js_projection`) and
    the factorised CAVI fit of a Gaussian target
    (:func:`vicourse.cavi.gaussian_2d`).

    Attributes
    ----------
    loc : ndarray of shape (d,)
        :math:`\mu`.
    scale_tril : ndarray of shape (d, d)
        :math:`L`, lower triangular with a positive diagonal; diagonal when
        ``covariance_type="diag"``.
    covariance_type : {"full", "diag"}
        The family the fit was made in.
    elbos : ndarray of shape (n_iter,)
        The bound recorded at every iteration, in nats, with every constant
        (see CONTRIBUTING.md, *the recorded bound*): for deterministic fits
        the ELBO at the end of each iteration, so ``elbos[-1]`` is the ELBO of
        the returned ``q``; for stochastic fits one Monte Carlo estimate per
        step.
    n_iter : int
        Iterations (or steps) run.
    converged : bool
        Whether the fit's stopping rule was met before ``max_iter``/``steps``.
    info : dict
        What only one routine has (an optimiser's message, the step sizes
        used, the estimator); each routine's docstring lists its keys.
    """

    loc: np.ndarray
    scale_tril: np.ndarray
    covariance_type: str
    elbos: np.ndarray
    n_iter: int
    converged: bool
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def covariance_matrix(self) -> np.ndarray:
        r""":math:`\Sigma = L L^\top`, shape (d, d)."""
        return self.scale_tril @ self.scale_tril.T

    @property
    def scale(self) -> np.ndarray:
        r"""The marginal standard deviations :math:`\sqrt{\Sigma_{ii}}`, shape (d,)."""
        return np.sqrt(np.einsum("ij,ij->i", self.scale_tril, self.scale_tril))

    def distribution(self) -> torch.distributions.MultivariateNormal:
        """The fitted ``q`` as a float64 :class:`torch.distributions.MultivariateNormal`."""
        return torch.distributions.MultivariateNormal(
            torch.from_numpy(np.array(self.loc, dtype=np.float64)),
            scale_tril=torch.from_numpy(np.array(self.scale_tril, dtype=np.float64)))
