"""Delegated session keys, the client's side (issue #12): sessions, a persisted store of
them, and the record of what a home issued.

* :mod:`~veil.client.delegation.session`: :class:`DelegatedSession` (``did``,
  ``authorizations``, ``is_expired``, ``expires_in_secs``, ``is_authorized``,
  ``serialize``/``from_string``, ``delegate``) and :func:`authorize`;
* :mod:`~veil.client.delegation.store`: :class:`SessionStore`, DIDSession's
  ``get``/``hasSessionFor``/``remove`` in the home (``sessions.json``, sealed under the
  home's passphrase);
* :mod:`~veil.client.delegation.issued`: the delegations a home issued
  (:func:`list_issued`, :class:`Delegation`), and what a revocation target names.

Using a session (``open_client(..., delegated=session)``) and revoking
(:meth:`veil.client.veil_client.VeilClient.revoke`) are the client's: see
:mod:`veil.client.veil_client`. The capability formats and checks are sans-IO in
:mod:`veil.onion.capability`.
"""

from __future__ import annotations

from veil.client.delegation.issued import Delegation, RevocationTarget, list_issued
from veil.client.delegation.session import (
    DEFAULT_EXPIRES_IN_S,
    DelegatedSession,
    ResourceLike,
    authorize,
)
from veil.client.delegation.store import SessionStore

__all__ = [
    "DEFAULT_EXPIRES_IN_S",
    "DelegatedSession",
    "Delegation",
    "ResourceLike",
    "RevocationTarget",
    "SessionStore",
    "authorize",
    "list_issued",
]
