"""Allow ``python -m poolkeeper``: the same as the ``poolkeeper`` command."""

import sys

from poolkeeper.cli.main import main

sys.exit(main())
