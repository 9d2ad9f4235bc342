"""``python -m app``: serve the web app (the same flags as ``eat app``)."""

import sys

from .server import main

sys.exit(main())
