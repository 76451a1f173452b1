"""The warnings that :mod:`vicourse` issues.

Errors are plain :class:`ValueError` (a bad argument, named in the message, or
a fit that broke down, with advice); see CONTRIBUTING.md.
"""

from __future__ import annotations

from sklearn.exceptions import ConvergenceWarning as _SklearnConvergenceWarning

__all__ = ["ConvergenceWarning"]


class ConvergenceWarning(_SklearnConvergenceWarning):
    """An iterative fit stopped at ``max_iter`` (or ``steps``) without meeting its stopping rule.

    Every iterative routine of the package issues it, with a message that
    names the routine, the last change of its bound, the tolerance, and what
    to try.  It subclasses scikit-learn's
    :class:`sklearn.exceptions.ConvergenceWarning` (itself a
    :class:`UserWarning`), so a filter written for either catches both::

        import warnings
        from vicourse import ConvergenceWarning
        warnings.simplefilter("error", ConvergenceWarning)   # make it an error
    """
