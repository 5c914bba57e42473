"""``python -m node``: the same as the ``veil-node`` command."""

from node.cli import main

raise SystemExit(main())
