"""Real data sets for the chapters, loaded without a download (Chapter 6).

The course runs offline, so every data set here ships with an installed
package.  Each loader returns float32 :class:`torch.Tensor` objects ready for
a ``torch.nn.Module`` and takes its train/test split from a seed.
"""

from __future__ import annotations

import numbers

import numpy as np
import sklearn.datasets
import torch
from sklearn.model_selection import train_test_split

from vicourse._validation import _describe, check_bool

# load_digits stores each pixel as a count of set pixels in a 4 x 4 block of the
# original 32 x 32 bitmap, an integer from 0 to 16.
_DIGITS_MAX = 16.0


def load_digits(*, binarize: bool = True, test_fraction: float = 0.2, seed: int = 0,
                return_labels: bool = False):
    r"""The 8 x 8 handwritten digits of scikit-learn, scaled to [0, 1] and split.

    The 1797 images of :func:`sklearn.datasets.load_digits` (the UCI optical
    recognition of handwritten digits test set, Alpaydin and Kaynak, 1998)
    are flattened to 64 pixels and divided by 16, their largest value.  With
    ``binarize=True`` each pixel is then thresholded, deterministically:

    .. math::

        x_j = \mathbb 1\{\text{pixel}_j / 16 \ge 0.5\},

    so the data suit the Bernoulli decoder of :class:`vicourse.vae.VAE`.  (The
    stochastic binarisation used for MNIST by some papers, drawing
    :math:`x_j \sim \mathrm{Bernoulli}(\text{pixel}_j / 16)`, is not used: the
    data set would then depend on a random draw.)

    The split is stratified by digit label and drawn with
    :func:`sklearn.model_selection.train_test_split` from ``seed``, so the
    same seed gives the same split on every machine.

    Parameters
    ----------
    binarize : bool, default True
        Threshold the scaled pixels at 0.5; otherwise keep the grey levels
        :math:`\{0, 1/16, \dots, 1\}`.
    test_fraction : float in (0, 1), default 0.2
        Share of the images held out (rounded up to a whole image, as
        scikit-learn does).
    seed : int >= 0, default 0
        Seed of the train/test split.
    return_labels : bool, default False
        Also return the digit labels (0 to 9) of the two parts.

    Returns
    -------
    train : tensor of shape (n_train, 64), float32, entries in [0, 1]
    test : tensor of shape (n_test, 64), float32, entries in [0, 1]
    train_labels, test_labels : tensor of shape (n_train,) and (n_test,), int64
        Only with ``return_labels=True``; the order is that of
        :func:`sklearn.model_selection.train_test_split`:
        ``train, test, train_labels, test_labels``.

    Raises
    ------
    ValueError
        If ``test_fraction`` is not strictly between 0 and 1, ``seed`` is not a
        non-negative integer, or ``binarize`` / ``return_labels`` is not a bool.

    References
    ----------
    Alpaydin and Kaynak (1998); Pedregosa et al. (2011).
    """
    binarize = check_bool(binarize, "binarize")
    return_labels = check_bool(return_labels, "return_labels")
    if (isinstance(test_fraction, bool) or not isinstance(test_fraction, numbers.Real)
            or not 0.0 < float(test_fraction) < 1.0):
        raise ValueError(f"test_fraction must be a number strictly between 0 and 1; "
                         f"got {_describe(test_fraction)}")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed must be a non-negative int; got {_describe(seed)}")

    images, labels = sklearn.datasets.load_digits(return_X_y=True)
    pixels = images / _DIGITS_MAX
    if binarize:
        pixels = (pixels >= 0.5).astype(np.float64)
    x_train, x_test, y_train, y_test = train_test_split(
        pixels, labels, test_size=float(test_fraction), random_state=int(seed), stratify=labels)
    train = torch.as_tensor(x_train, dtype=torch.float32)
    test = torch.as_tensor(x_test, dtype=torch.float32)
    if not return_labels:
        return train, test
    return (train, test, torch.as_tensor(y_train, dtype=torch.int64),
            torch.as_tensor(y_test, dtype=torch.int64))
