"""``python -m veil.client``: the ``veil`` command, where the console script is not on PATH."""

from veil.client.cli import main

raise SystemExit(main())
