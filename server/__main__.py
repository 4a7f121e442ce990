"""``python -m server``: the same as the ``treasure-hunt`` console script."""

import sys

from .cli import main

sys.exit(main())
