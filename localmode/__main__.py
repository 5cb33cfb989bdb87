"""python -m localmode: start local mode in the foreground."""
import sys

from localmode.server import main

sys.exit(main())
