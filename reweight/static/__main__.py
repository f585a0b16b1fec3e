"""``python -m reweight.static``: the DSIR command line (see :mod:`reweight.static.cli`)."""

import sys

from reweight.static.cli import main

if __name__ == "__main__":
    sys.exit(main())
