"""The map operations between two lb4 states (pure).

Called by :mod:`glia.service.lbsync` after each plan: ``diff(old, new)`` gives
the :class:`~glia.datapath.lbtypes.MapChanges` that take the maps from
``old``'s content to ``new``'s. Frontends that did not change (the same
:class:`~glia.service.lbstate.FrontendPlan` object) are skipped; a state adopted
from the maps (``LBState.actual``) is compared entry by entry, so leftovers
go. A key one frontend drops and another writes is written, never deleted.
"""

from __future__ import annotations

from glia.datapath.lbtypes import LB_F_AFFINITY, MapChanges, MapContents
from glia.service.lbstate import FrontendPlan, LBState, add_frontend


def diff(old: LBState | None, new: LBState) -> MapChanges:
    """The map operations that turn ``old``'s content into ``new``'s."""
    if old is None or old.actual is not None:
        before = old.actual if old is not None and old.actual is not None else MapContents()
        return _diff_contents(before, new.contents())
    ch = MapChanges()
    for f, fp in new.frontends.items():
        ofp = old.frontends.get(f)
        if ofp is not fp:
            _diff_frontend(ch, ofp, fp)
    for f, ofp in old.frontends.items():
        if f not in new.frontends:
            _diff_frontend(ch, ofp, None)
    if old.backend_ids is not new.backend_ids:
        before_be = {i: a for a, i in old.backend_ids.items()}
        after_be = {i: a for a, i in new.backend_ids.items()}
        ch.upsert.backends = {i: a for i, a in after_be.items() if before_be.get(i) != a}
        ch.delete_backends = [i for i in before_be if i not in after_be]
    _drop_rewritten(ch)
    return ch


def _diff_frontend(ch: MapChanges, old: FrontendPlan | None, new: FrontendPlan | None) -> None:
    if old is None and new is not None:  # the common case at start-up: all new
        add_frontend(ch.upsert, new)
        return
    before, after = MapContents(), MapContents()
    if old is not None:
        add_frontend(before, old)
    if new is not None:
        add_frontend(after, new)
    _merge(ch, before, after)
    if old is None or not old.affinity_timeout:
        return
    if new is None or not new.affinity_timeout or new.svc_id != old.svc_id:
        ch.flush_affinity.add(old.svc_id)


def _diff_contents(before: MapContents, after: MapContents) -> MapChanges:
    ch = MapChanges()
    _merge(ch, before, after)
    ch.upsert.backends = {i: a for i, a in after.backends.items() if before.backends.get(i) != a}
    ch.delete_backends = [i for i in before.backends if i not in after.backends]
    keep = {e.svc_id for e in after.services.values() if e.flags & LB_F_AFFINITY}
    ch.flush_affinity = {
        e.svc_id for e in before.services.values() if e.flags & LB_F_AFFINITY
    } - keep
    _drop_rewritten(ch)
    return ch


def _merge(ch: MapChanges, before: MapContents, after: MapContents) -> None:
    """Add the changes between two partial contents (services .. affinity matches)."""
    u = ch.upsert
    for f, e in after.services.items():
        if before.services.get(f) != e:
            u.services[f] = e
    ch.delete_services += [f for f in before.services if f not in after.services]
    for s, r in after.revnat.items():
        if before.revnat.get(s) != r:
            u.revnat[s] = r
    ch.delete_revnat += [s for s in before.revnat if s not in after.revnat]
    for k, b in after.slots.items():
        if before.slots.get(k) != b:
            u.slots[k] = b
    ch.delete_slots += [k for k in before.slots if k not in after.slots]
    for s, t in after.maglev.items():
        if before.maglev.get(s) != t:
            u.maglev[s] = t
    ch.delete_maglev += [s for s in before.maglev if s not in after.maglev]
    u.affinity_match |= after.affinity_match - before.affinity_match
    ch.delete_affinity_match += list(before.affinity_match - after.affinity_match)


def _drop_rewritten(ch: MapChanges) -> None:
    """A key both deleted (by one frontend) and written (by another) must stay."""
    u = ch.upsert
    ch.delete_services = [k for k in ch.delete_services if k not in u.services]
    ch.delete_revnat = [k for k in ch.delete_revnat if k not in u.revnat]
    ch.delete_slots = [k for k in ch.delete_slots if k not in u.slots]
    ch.delete_maglev = [k for k in ch.delete_maglev if k not in u.maglev]
    ch.delete_affinity_match = [k for k in ch.delete_affinity_match if k not in u.affinity_match]
    ch.delete_backends = [k for k in ch.delete_backends if k not in u.backends]
