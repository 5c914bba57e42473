"""A session's state: a pure function of a set of records, and the node's checks.

The state is built from a *set* of records (:mod:`~veil.onion.group.records`) and from
nothing else, so replicas merge by union in any order. One module per job, each
importing only those above it in this list:

* :mod:`~veil.onion.group.state.judging`: a record judged on its own (signatures,
  chains, rights, times at its date, the policy);
* :mod:`~veil.onion.group.state.session_state`: :class:`SessionState` (how the set is
  read: the genesis, revocations in order, void records, members, key epochs), with
  :class:`Member` and :class:`KeyHolder`;
* :mod:`~veil.onion.group.state.node_checks`: a node's two questions, :func:`check_record`
  (would it accept this record now?) and :func:`check_access` (a request after the
  session's end).
"""

from __future__ import annotations

from .node_checks import check_access, check_record
from .session_state import KeyHolder, Member, SessionState

__all__ = ["KeyHolder", "Member", "SessionState", "check_access", "check_record"]
