"""`python -m mailstream`: the same command line as `mailstream`."""

import sys

from mailstream.cli import main

sys.exit(main())
