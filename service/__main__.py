"""``python -m service`` is the ``unifrost`` command."""

import sys

from service.cli import main

sys.exit(main())
