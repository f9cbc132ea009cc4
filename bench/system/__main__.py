"""C{python -m bench.system}: see L{bench.system.runner}."""

import sys

from bench.system.runner import main

sys.exit(main())
