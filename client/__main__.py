"""``python -m client``: the ``veil`` command, for wherever the console script is not on PATH."""

from client.cli import main

raise SystemExit(main())
