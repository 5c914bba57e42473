"""veil's service node and directory authority (the ``veil-node`` command).

Installed and imported as ``veil.node``. :mod:`veil.node.app` assembles a node
(:func:`~veil.node.app.open_node`), :mod:`veil.node.authority` a directory authority,
and :mod:`veil.node.cli` is the command; larger jobs are sub-packages (``authority``,
``link``, ``replication``, ``server``, ``store``). Its errors are one tree under
:class:`veil.node.errors.NodeError`. It imports :mod:`veil.onion` only, never
:mod:`veil.client`.
"""
