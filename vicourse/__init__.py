"""vicourse: the derivations of the variational inference course, as tested code.

One module per chapter; each function's docstring names the equation it
implements.

=====================  =========  ==================================================
module                 chapter    what it holds
=====================  =========  ==================================================
``vicourse.elbo``      1          the ELBO of discrete ``q``; Monte Carlo ELBO
``vicourse.models``    1          models with exact posteriors (conjugate Gaussian)
``vicourse.plotting``  all        figure helpers shared by the chapters
=====================  =========  ==================================================
"""

from vicourse import elbo, models, plotting

__all__ = ["elbo", "models", "plotting"]
__version__ = "0.1.0"
