"""vicourse: the derivations of the variational inference course, as tested code.

One module per chapter; each function's docstring names the equation of the
book it implements (the book's appendix "Equations and the code that
implements them" lists them all).

========================  =======  ====================================================
module                    chapter  what it holds
========================  =======  ====================================================
``vicourse.models``       1        models with exact posteriors (conjugate Gaussian)
``vicourse.elbo``         1        the ELBO of a discrete ``q``; the Monte Carlo ELBO
``vicourse.em``           2        EM for Gaussian mixtures as coordinate ascent on the ELBO
``vicourse.cavi``         3        mean-field CAVI: 2-D Gaussian, Normal–Gamma, Bayesian mixtures
``vicourse.kl``           4        KL in both directions, M-/I-/JS-projections, Gaussian expectations
``vicourse.estimators``   5        score-function and reparameterised gradient estimators
``vicourse.vi``           5, 9     black-box VI: Gaussian and flow fits to unnormalised log-densities
``vicourse.datasets``     6        the 8x8 digits shipped with scikit-learn, as tensors
``vicourse.vae``          6        the variational autoencoder, its bounds and its training loop
``vicourse.diagnostics``  7        importance sampling, PSIS and k-hat, effective sample size, NUTS, VSBC
``vicourse.svi``          8        stochastic VI: the mixture by minibatches, online LDA, minibatch BBVI
``vicourse.flows``        9        normalizing flows (planar, affine coupling) as variational families
``vicourse.plotting``     all      figure helpers shared by the chapters, the book's figure style
``vicourse.claims``       all      :func:`~vicourse.claims.check`: assert a claim of the text, print it
========================  =======  ====================================================

Shared by every module: :class:`GaussianFit`, the one result type of a fitted
Gaussian (:class:`FlowFit` for a fitted flow), and :class:`ConvergenceWarning`,
issued by every iterative routine that stops without converging.
CONTRIBUTING.md lists the vocabulary the modules share.
"""

from vicourse import (
    cavi,
    claims,
    datasets,
    diagnostics,
    elbo,
    em,
    estimators,
    flows,
    kl,
    models,
    plotting,
    svi,
    vae,
    vi,
)
from vicourse._gaussian import GaussianFit
from vicourse.exceptions import ConvergenceWarning
from vicourse.flows import FlowFit

__all__ = ["ConvergenceWarning", "FlowFit", "GaussianFit", "cavi", "claims", "datasets",
           "diagnostics", "elbo", "em", "estimators", "flows", "kl", "models", "plotting", "svi",
           "vae", "vi"]
__version__ = "0.1.0"
