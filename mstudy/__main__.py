"""``python -m mstudy``: the same as the ``mstudy`` command."""

import sys

from mstudy.cli import main

if __name__ == "__main__":
    sys.exit(main())
