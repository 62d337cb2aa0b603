import sys

from cxrlm.cli import main

sys.exit(main())
