import sys

from bitnn.cli import main

sys.exit(main())
