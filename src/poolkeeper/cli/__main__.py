"""Allow ``python -m poolkeeper.cli``."""

import sys

from poolkeeper.cli.main import main

sys.exit(main())
