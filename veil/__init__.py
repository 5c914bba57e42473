"""veil: an anonymous, onion-routed messaging network in the style of Session.

Three packages, each a folder at the top of the repository and installed under this one
name, so that a program embedding veil finds no ``client`` or ``node`` of ours in its
site-packages:

- ``veil.onion``: the protocol, sans-IO (keys, packets, envelopes, CBOR, RPC schemas);
- ``veil.node``: the service node and directory authority (``veil-node``);
- ``veil.client``: the client library and the ``veil`` command.

In the repository, ``veil/onion``, ``veil/node`` and ``veil/client`` are links to the
top-level folders, so that tools which read the source (mypy, an editor, ``python`` run
from the checkout) resolve ``veil.*`` exactly as the installed package does; a built
wheel holds plain files under ``veil/`` and nothing at the top level beside it.
"""

__version__ = "0.1.0"
