"""``python -m detectors detectors list|new``: the detectors command group without the rest of the CLI."""

import sys

from .cli import main

sys.exit(main())
