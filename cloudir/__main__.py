"""``python -m cloudir``: the same command line as ``cloudir``."""

from cloudir.cli import main

main()
