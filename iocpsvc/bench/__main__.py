"""C{python -m iocpsvc.bench}: the load tool's command line (L{iocpsvc.bench.main})."""

import sys

from iocpsvc.bench import main

sys.exit(main())
