"""Real data sets for the chapters, loaded without a download (Chapter 6).

The course runs offline, so every data set here ships with an installed
package.  Each loader returns float32 :class:`torch.Tensor` objects ready for
a ``torch.nn.Module`` and takes its train/test split from a seed.
"""

from __future__ import annotations

import math

import numpy as np
import sklearn.datasets
import torch
from sklearn.model_selection import train_test_split

from vicourse._validation import check_bool, check_in_interval, check_seed

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
    :func:`sklearn.model_selection.train_test_split`, whose random state is
    NumPy's Mersenne Twister seeded with ``seed`` through
    :class:`numpy.random.SeedSequence`
    (``RandomState(MT19937(seed))``, which takes any seed up to
    :math:`2^{63} - 1`), so the same seed gives the same split on every
    machine.

    Parameters
    ----------
    binarize : bool, default True
        Threshold the scaled pixels at 0.5; otherwise keep the grey levels
        :math:`\{0, 1/16, \dots, 1\}`.
    test_fraction : float in (0, 1), default 0.2
        Share of the images held out (rounded up to a whole image, as
        scikit-learn does); each part must keep at least one image of each
        digit, so it lies between about 0.005 and 0.995.
    seed : int in [0, 2**63 - 1], default 0
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
        If ``test_fraction`` is not a number strictly between 0 and 1 (or leaves
        a part without some digit), ``seed``
        is not an integer in [0, 2**63 - 1], or ``binarize`` / ``return_labels``
        is not a bool.

    References
    ----------
    Alpaydin and Kaynak (1998); Pedregosa et al. (2011).
    """
    binarize = check_bool(binarize, "binarize")
    return_labels = check_bool(return_labels, "return_labels")
    test_fraction = check_in_interval(test_fraction, "test_fraction", 0.0, 1.0,
                                      closed=(False, False))
    seed = check_seed(seed)

    images, labels = sklearn.datasets.load_digits(return_X_y=True)
    # A stratified split needs each part to hold at least one image of each digit;
    # scikit-learn rounds the test set's size up, as here.
    n_test = math.ceil(test_fraction * len(labels))
    n_classes = len(np.unique(labels))
    if min(n_test, len(labels) - n_test) < n_classes:
        raise ValueError(f"test_fraction must leave at least {n_classes} of the {len(labels)} "
                         f"images (one per digit) in each part; got {test_fraction!r}, which "
                         f"leaves {len(labels) - n_test} for training and {n_test} for testing")
    pixels = images / _DIGITS_MAX
    if binarize:
        pixels = (pixels >= 0.5).astype(np.float64)
    x_train, x_test, y_train, y_test = train_test_split(
        pixels, labels, test_size=test_fraction,
        random_state=np.random.RandomState(np.random.MT19937(seed)), stratify=labels)
    train = torch.as_tensor(x_train, dtype=torch.float32)
    test = torch.as_tensor(x_test, dtype=torch.float32)
    if not return_labels:
        return train, test
    return (train, test, torch.as_tensor(y_train, dtype=torch.int64),
            torch.as_tensor(y_test, dtype=torch.int64))
