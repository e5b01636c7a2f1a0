"""`python -m adaptive_bkg.cli`: the same as the `adaptive-bkg` command."""

from adaptive_bkg.cli import main

main()
