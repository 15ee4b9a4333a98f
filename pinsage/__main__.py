import sys

from pinsage.cli import main

sys.exit(main())
