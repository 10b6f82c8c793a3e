"""Per-endpoint policy entries, computed incrementally (the agent's policy core).

Pure, stateful, no I/O. The agent feeds one :class:`PolicyEngine` (for its own
cluster) with every identity of every cluster (:meth:`~PolicyEngine.upsert_identity`,
from :class:`glia.agent.identities.IdentityCache`), the CIDR identities it
allocated (:mod:`glia.policy.cidr`) and its cluster's policies; each change
returns the subjects (label sets of local endpoints it asked about) whose
entries may have changed; it then calls :meth:`~PolicyEngine.compute` for
those and programs :func:`glia.policy.entries.diff` of the result. A reported
subject stays to be computed: until it is, later changes need not report it
again (the agent keeps a dirty set and may batch changes before computing).

What is cached, so that a change costs what it touches:

- each peer term's matching identities (label selectors through a label index,
  so a new identity is tested only against selectors it could match);
- which rules select a subject (rule subject selectors through an index);
- the entries per set of selecting rules (endpoints selected by the same rules
  share them), invalidated when a peer term they used gains or loses an identity.

:func:`compute` is the one-shot form (a throw-away engine).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from glia.model.identity import CLUSTER_LABEL, MIN_LOCAL, ReservedIdentity
from glia.policy.compiled import HOST_RULE, CompiledRule, compile_policy, reserved_peers
from glia.policy.entries import (
    ANY_IDENTITY,
    Action,
    EndpointPolicy,
    Grant,
    PolicyKey,
    PolicyValue,
    resolve,
)
from glia.policy.model import Direction, Policy
from glia.policy.peers import LabelPeer, Peer, PeerTerm
from glia.policy.selector import LabelIndex, Selector, SelectorIndex

SubjectKey = frozenset[tuple[str, str]]
RuleSetKey = frozenset[int]  # uids of the rules selecting a subject


def subject_key(labels: Mapping[str, str]) -> SubjectKey:
    return frozenset(labels.items())


@dataclass
class _Result:
    policy: EndpointPolicy
    terms: set[PeerTerm]  # the peer terms whose identities it used
    subjects: int = 0  # subjects currently using it


class PolicyEngine:
    """Entries for the endpoints of ``cluster`` from its policies and every cluster's identities."""

    def __init__(self, cluster: str, *, allow_host: bool = True) -> None:
        self.cluster = cluster
        self.allow_host = allow_host
        self._peers: dict[int, Peer] = {p.identity: p for p in reserved_peers()}
        self._endpoints: LabelIndex[int] = LabelIndex()  # endpoint identities by labels
        self._others: set[int] = set(self._peers)  # reserved and CIDR identities
        # peer terms in use: their identities, their users, how to find them
        self._term_ids: dict[PeerTerm, set[int]] = {}
        self._term_refs: dict[PeerTerm, int] = {}
        self._label_terms: dict[Selector, LabelPeer] = {}
        self._label_sels = SelectorIndex()
        self._other_terms: set[PeerTerm] = set()
        self._terms_of: dict[int, set[PeerTerm]] = {}  # identity -> terms naming it
        # rules
        self._sources: dict[tuple[str, str], Policy] = {}
        self._policies: dict[tuple[str, str], list[CompiledRule]] = {}
        self._rules: dict[int, CompiledRule] = {}
        self._rules_by_subject: dict[Selector, set[int]] = {}
        self._subject_sels = SelectorIndex()
        # subjects and results
        self._subjects: LabelIndex[SubjectKey] = LabelIndex()
        self._subject_rules: dict[SubjectKey, RuleSetKey] = {}
        self._results: dict[RuleSetKey, _Result] = {}
        self._term_users: dict[PeerTerm, set[RuleSetKey]] = {}

    # -- identities ---------------------------------------------------------------

    def upsert_identity(
        self, identity: int, labels: Mapping[str, str], cluster: str
    ) -> set[SubjectKey]:
        """An endpoint identity minted by ``cluster`` (its cluster label is set to ``cluster``)."""
        peer = Peer.endpoint(labels, cluster, identity)
        old = self._peers.get(identity)
        if old == peer:
            return set()
        changed = self._drop_identity(identity)
        self._peers[identity] = peer
        self._endpoints.add(identity, peer.labels)
        for sel in self._label_sels.matching(peer.labels):
            changed.add(self._label_terms[sel])
        for term in self._other_terms:
            if term.matches(peer):
                changed.add(term)
        for term in changed:
            if term.matches(peer):
                self._term_ids[term].add(identity)
                self._terms_of.setdefault(identity, set()).add(term)
        return self._invalidate(changed)

    def upsert_cidr_identity(self, identity: int, prefix: str) -> set[SubjectKey]:
        """A node-local identity the datapath gives world addresses in ``prefix``."""
        if identity < MIN_LOCAL:
            raise ValueError(f"identity {identity} is reserved")
        peer = Peer.cidr(identity, prefix)
        if self._peers.get(identity) == peer:
            return set()
        changed = self._drop_identity(identity)
        self._peers[identity] = peer
        self._others.add(identity)
        for term in self._other_terms:
            if term.matches(peer):
                self._term_ids[term].add(identity)
                self._terms_of.setdefault(identity, set()).add(term)
                changed.add(term)
        return self._invalidate(changed)

    def delete_identity(self, identity: int) -> set[SubjectKey]:
        if identity < MIN_LOCAL:
            return set()  # reserved identities never go away
        return self._invalidate(self._drop_identity(identity))

    def identities(self) -> Mapping[int, Peer]:
        return self._peers

    def _drop_identity(self, identity: int) -> set[PeerTerm]:
        if self._peers.pop(identity, None) is None:
            return set()
        self._endpoints.remove(identity)
        self._others.discard(identity)
        terms = self._terms_of.pop(identity, set())
        for term in terms:
            self._term_ids[term].discard(identity)
        return set(terms)

    # -- peer terms ---------------------------------------------------------------

    def _use_term(self, term: PeerTerm) -> None:
        n = self._term_refs.get(term, 0)
        self._term_refs[term] = n + 1
        if n:
            return
        if isinstance(term, LabelPeer):
            ids = self._endpoints.select(term.selector)
            self._label_terms[term.selector] = term
            self._label_sels.add(term.selector)
        else:
            ids = {
                i
                for i in self._others | set(self._endpoints.labels)
                if term.matches(self._peers[i])
            }
            self._other_terms.add(term)
        self._term_ids[term] = ids
        for i in ids:
            self._terms_of.setdefault(i, set()).add(term)

    def _release_term(self, term: PeerTerm) -> None:
        n = self._term_refs[term] - 1
        if n:
            self._term_refs[term] = n
            return
        del self._term_refs[term]
        for i in self._term_ids.pop(term):
            ts = self._terms_of.get(i)
            if ts is not None:
                ts.discard(term)
        if isinstance(term, LabelPeer):
            del self._label_terms[term.selector]
            self._label_sels.remove(term.selector)
        else:
            self._other_terms.discard(term)

    # -- policies -----------------------------------------------------------------

    def upsert_policy(self, policy: Policy) -> set[SubjectKey]:
        if policy.cluster != self.cluster:
            raise ValueError(
                f"policy {policy.namespace}/{policy.name} is cluster {policy.cluster!r}'s; "
                f"this engine computes cluster {self.cluster!r}'s endpoints"
            )
        key = (policy.namespace, policy.name)
        if self._sources.get(key) == policy:
            return set()
        self._sources[key] = policy
        affected = self._remove_rules(self._policies.pop(key, []))
        rules = compile_policy(policy)
        self._policies[key] = rules
        for r in rules:
            self._rules[r.uid] = r
            self._rules_by_subject.setdefault(r.subject, set()).add(r.uid)
            self._subject_sels.add(r.subject)
            for item in r.items:
                for term in item.peers or ():
                    self._use_term(term)
            affected |= self._subjects.select(r.subject)
        return self._reselect(affected)

    def delete_policy(self, namespace: str, name: str) -> set[SubjectKey]:
        self._sources.pop((namespace, name), None)
        return self._reselect(self._remove_rules(self._policies.pop((namespace, name), [])))

    def set_policies(self, policies: Iterable[Policy]) -> set[SubjectKey]:
        """Exactly these policies (a re-list); unchanged ones are kept as they are."""
        wanted = {(p.namespace, p.name): p for p in policies}
        affected: set[SubjectKey] = set()
        for key in list(self._policies):
            if key not in wanted:
                affected |= self.delete_policy(*key)
        for p in wanted.values():
            affected |= self.upsert_policy(p)
        return affected

    def policies(self) -> list[Policy]:
        return [self._sources[k] for k in sorted(self._sources)]

    def _remove_rules(self, rules: list[CompiledRule]) -> set[SubjectKey]:
        affected: set[SubjectKey] = set()
        for r in rules:
            del self._rules[r.uid]
            uids = self._rules_by_subject[r.subject]
            uids.discard(r.uid)
            if not uids:
                del self._rules_by_subject[r.subject]
                self._subject_sels.remove(r.subject)
            for item in r.items:
                for term in item.peers or ():
                    self._release_term(term)
            affected |= self._subjects.select(r.subject)
        return affected

    # -- subjects -----------------------------------------------------------------

    def _selecting(self, labels: Mapping[str, str]) -> RuleSetKey:
        uids: set[int] = set()
        for sel in self._subject_sels.matching(labels):
            uids |= self._rules_by_subject[sel]
        return frozenset(uids)

    def _reselect(self, subjects: set[SubjectKey]) -> set[SubjectKey]:
        """Subjects whose set of selecting rules changed (their entries may have too)."""
        changed: set[SubjectKey] = set()
        for s in subjects:
            new = self._selecting(self._subjects.labels[s])
            old = self._subject_rules[s]
            if new != old:
                self._unref_result(old)
                self._subject_rules[s] = new
                self._ref_result(new)
                changed.add(s)
        return changed

    def _ref_result(self, key: RuleSetKey) -> None:
        r = self._results.get(key)
        if r is not None:
            r.subjects += 1

    def _unref_result(self, key: RuleSetKey) -> None:
        r = self._results.get(key)
        if r is None:
            return
        r.subjects -= 1
        if r.subjects <= 0:
            self._drop_result(key)

    def _drop_result(self, key: RuleSetKey) -> None:
        r = self._results.pop(key)
        for term in r.terms:
            users = self._term_users.get(term)
            if users is not None:
                users.discard(key)
                if not users:
                    del self._term_users[term]

    def _invalidate(self, terms: set[PeerTerm]) -> set[SubjectKey]:
        stale: set[RuleSetKey] = set()
        for term in terms:
            stale |= self._term_users.get(term, set())
        for key in stale:
            self._drop_result(key)
        if not stale:
            return set()
        return {s for s, k in self._subject_rules.items() if k in stale}

    def subjects(self) -> set[SubjectKey]:
        return set(self._subject_rules)

    def compute(self, labels: Mapping[str, str]) -> EndpointPolicy:
        """The entries of a local endpoint with these labels (its identity's labels).

        The subject is remembered: later changes report it until :meth:`forget`.
        """
        labels = {**labels, CLUSTER_LABEL: self.cluster}
        skey = subject_key(labels)
        if skey not in self._subject_rules:
            self._subjects.add(skey, labels)
            self._subject_rules[skey] = self._selecting(labels)
            self._ref_result(self._subject_rules[skey])
        rkey = self._subject_rules[skey]
        result = self._results.get(rkey)
        if result is None:
            result = self._build(rkey)
            result.subjects = sum(1 for k in self._subject_rules.values() if k == rkey)
            self._results[rkey] = result
            for term in result.terms:
                self._term_users.setdefault(term, set()).add(rkey)
        return result.policy

    def forget(self, labels: Mapping[str, str]) -> None:
        skey = subject_key({**labels, CLUSTER_LABEL: self.cluster})
        rkey = self._subject_rules.pop(skey, None)
        if rkey is None:
            return
        self._subjects.remove(skey)
        self._unref_result(rkey)

    def _build(self, rkey: RuleSetKey) -> _Result:
        rules = [self._rules[u] for u in sorted(rkey)]
        terms: set[PeerTerm] = set()
        grants: dict[Direction, dict[int, set[Grant]]] = {d: {} for d in Direction}
        enforced = {d: any(d in r.enforces for r in rules) for d in Direction}
        for r in rules:
            for item in r.items:
                action = Action.DENY if item.deny else Action.ALLOW
                rule = str(item.ref)
                new = [Grant(p, action, rule) for p in (item.ports or (None,))]
                by_id = grants[item.direction]
                if item.peers is None:
                    ids: Iterable[int] = (ANY_IDENTITY,)
                else:
                    found: set[int] = set()
                    for term in item.peers:
                        terms.add(term)
                        found |= self._term_ids[term]
                    ids = found
                for i in ids:
                    by_id.setdefault(i, set()).update(new)
        if enforced[Direction.INGRESS] and self.allow_host:
            host = grants[Direction.INGRESS].setdefault(ReservedIdentity.HOST, set())
            host.add(Grant(None, Action.ALLOW, str(HOST_RULE)))
        entries: dict[PolicyKey, PolicyValue] = {}
        for d in Direction:
            if enforced[d]:
                entries.update(resolve(d, {i: frozenset(g) for i, g in grants[d].items()}))
        policy = EndpointPolicy(enforced[Direction.INGRESS], enforced[Direction.EGRESS], entries)
        return _Result(policy, terms)


def compute(
    labels: Mapping[str, str],
    policies: Iterable[Policy],
    identities: Mapping[int, tuple[Mapping[str, str], str]],
    *,
    cluster: str,
    cidr_identities: Mapping[int, str] | None = None,
    allow_host: bool = True,
) -> EndpointPolicy:
    """One endpoint's entries (one-shot): ``identities`` maps number -> (labels, minting cluster);
    ``cidr_identities`` maps number -> prefix. Only ``cluster``'s policies apply."""
    engine = PolicyEngine(cluster, allow_host=allow_host)
    for number, (ilabels, icluster) in identities.items():
        engine.upsert_identity(number, ilabels, icluster)
    for number, prefix in (cidr_identities or {}).items():
        engine.upsert_cidr_identity(number, prefix)
    engine.set_policies(p for p in policies if p.cluster == cluster)
    return engine.compute(labels)
