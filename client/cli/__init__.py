"""The ``veil`` command (console script ``veil = veil.client.cli:main``).

- :mod:`~veil.client.cli.framework`: parsing, the handler's context, output
  (``--json``), exit codes, the one error-handling point;
- :mod:`~veil.client.cli.app`: the command groups in help order, and :func:`main`;
- one module per command group: :mod:`~veil.client.cli.identity` (``veil id``),
  :mod:`~veil.client.cli.messaging` (``veil send|inbox|status``),
  :mod:`~veil.client.cli.devnet` (``veil devnet``).

No module of this package imports this one: each imports the framework it needs.
"""

from __future__ import annotations

from veil.client.cli.app import main

__all__ = ["main"]
