import sys

from slaledger.cli import main

sys.exit(main())
