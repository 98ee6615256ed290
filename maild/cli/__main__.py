"""``python -m maild.cli``: the command line, as the ``maild`` script runs it."""
from maild.cli.main import main

raise SystemExit(main())
