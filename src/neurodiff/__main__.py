"""`python -m neurodiff` runs the command line (the demo starts its benchmark stages this way)."""

from neurodiff.cli import main

main()
