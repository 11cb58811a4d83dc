"""`python -m fabric_lab`: the same as the `fabric-lab` command."""

import sys

from fabric_lab.cli import main

if __name__ == "__main__":
    sys.exit(main())
