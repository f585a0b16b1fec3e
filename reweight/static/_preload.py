"""Imported by the forkserver process so that worker processes start with warm kernels.

Importing this module builds the character table and loads the compiled featurizer kernels
(from numba's on-disk cache); workers forked from the server inherit both.
"""

from reweight.static._pipeline import warm_up

warm_up()
