"""``python -m fogline``: the same as the ``fogline`` command."""

import sys

from fogline.cli import main

sys.exit(main())
