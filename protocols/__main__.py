"""`python -m protocols` is the same as the `genshift` command."""

import sys

from protocols.cli import main

sys.exit(main())
