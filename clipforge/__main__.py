"""``python -m clipforge``: the same command line as the ``clipforge`` console script."""

from clipforge.cli import main

main()
