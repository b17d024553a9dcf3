"""``python -m blockwise.data.mt_corpus --out data/mt``: see :mod:`blockwise.data.mt_corpus`."""

import sys

from .cli import main

sys.exit(main())
