"""python -m chalicelib.local: start local mode in the foreground."""
import sys

from chalicelib.local.server import main

sys.exit(main())
