"""`python -m nnforge.serve PATH ...`: the same as `nnforge serve PATH ...`."""

import sys

from ..cli.main import main

if __name__ == "__main__":
    sys.exit(main(["serve", *sys.argv[1:]]))
