"""The ``vramplan`` console script (and ``python -m vramplan``): the CLI itself, run in this
process by the library the wheel carries, with the same arguments, output and exit codes."""

import sys

from . import _vramplan


def main():
    sys.stdout.flush()
    sys.exit(_vramplan.run_cli(["vramplan"] + sys.argv[1:]))


if __name__ == "__main__":
    main()
