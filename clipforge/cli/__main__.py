"""``python -m clipforge.cli``: the same command line as ``clipforge``."""

from clipforge.cli import main

main()
