"""``python -m veil.node``: the same as the ``veil-node`` command."""

from veil.node.cli import main

raise SystemExit(main())
