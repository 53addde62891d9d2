"""`python -m nnforge`: the same as the `nnforge` command."""

import sys

from nnforge.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
