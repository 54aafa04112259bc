"""``python -m tracklayer_middleware ...`` runs the ``tracklayer`` command."""

import sys

from .cli import main

sys.exit(main(prog="python -m tracklayer_middleware"))
