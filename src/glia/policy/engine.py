"""Per-endpoint policy entries, computed incrementally (the agent's policy core).

Pure, stateful, no I/O. The agent feeds one :class:`PolicyEngine` (for its own
cluster) with every identity of every cluster (:meth:`~PolicyEngine.upsert_identity`,
from :class:`glia.agent.identities.IdentityCache`), the CIDR identities it
allocated (:mod:`glia.policy.cidr`) and its cluster's policies. Each change
returns the subjects (label sets of local endpoints it asked about with
:meth:`~PolicyEngine.compute`) whose entries changed or may have; the agent
calls :meth:`~PolicyEngine.compute` for those and programs
:func:`glia.policy.entries.diff` of the result. A reported subject stays to be
computed: until it is, later changes need not report it again (the agent
keeps a dirty set, and may batch changes before computing).

What is kept, so that a change costs what it touches:

- each peer term's identities (label selectors through a label index, so a
  new identity is tested only against the selectors it could match);
- which rules select a subject (rule subject selectors through an index);
- the entries per set of selecting rules (endpoints selected by the same rules
  share them). A policy change rebuilds the sets it touches; an identity
  change only replaces that identity's entries in the sets whose rules name
  it (an identity's entries depend only on its own grants and on the denies
  of ANY: :func:`glia.policy.entries.resolve_identity`).

:func:`compute` is the one-shot form (a throw-away engine).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from glia.model.identity import CLUSTER_LABEL, MIN_LOCAL, ReservedIdentity
from glia.policy.compiled import (
    HOST_RULE,
    CompiledItem,
    CompiledRule,
    compile_policy,
    reserved_peers,
)
from glia.policy.entries import (
    ANY_IDENTITY,
    Action,
    EndpointPolicy,
    Grant,
    PolicyKey,
    PolicyValue,
    any_denies,
    resolve,
    resolve_identity,
)
from glia.policy.model import Direction, Entity, Policy
from glia.policy.peers import EntityPeer, LabelPeer, Peer, PeerTerm
from glia.policy.selector import LabelIndex, Selector, SelectorIndex

SubjectKey = frozenset[tuple[str, str]]
RuleSetKey = frozenset[int]  # uids of the rules selecting a subject


def subject_key(labels: Mapping[str, str]) -> SubjectKey:
    return frozenset(labels.items())


def _grants(item: CompiledItem) -> list[Grant]:
    action = Action.DENY if item.deny else Action.ALLOW
    rule = str(item.ref)
    return [Grant(p, action, rule) for p in (item.ports or (None,))]


@dataclass
class _Result:
    """The entries of one set of selecting rules, and what patching them needs."""

    rules: list[CompiledRule]
    policy: EndpointPolicy
    terms: set[PeerTerm]  # the peer terms whose identities it used
    keys_of: dict[int, list[PolicyKey]] = field(default_factory=dict)  # identity -> its keys
    denies_of_any: dict[Direction, list[Grant]] = field(default_factory=dict)


class PolicyEngine:
    """Entries for the endpoints of ``cluster`` from its policies and every cluster's identities."""

    def __init__(self, cluster: str, *, allow_host: bool = True) -> None:
        self.cluster = cluster
        self.allow_host = allow_host
        reserved = reserved_peers()
        self._peers: dict[int, Peer] = {p.identity: p for p in reserved}
        self._reserved_ids = {p.identity for p in reserved}
        self._cidr_ids: set[int] = set()
        self._endpoints: LabelIndex[int] = LabelIndex()  # endpoint identities by labels
        # peer terms in use: their identities, their users, how to find them
        self._term_ids: dict[PeerTerm, set[int]] = {}
        self._term_refs: dict[PeerTerm, int] = {}
        self._label_terms: dict[Selector, LabelPeer] = {}
        self._label_sels = SelectorIndex()
        self._other_terms: set[PeerTerm] = set()  # entity and CIDR terms: few, always tested
        self._terms_of: dict[int, set[PeerTerm]] = {}  # identity -> terms naming it
        # policies and their rules
        self._sources: dict[tuple[str, str], Policy] = {}
        self._policies: dict[tuple[str, str], list[CompiledRule]] = {}
        self._rules: dict[int, CompiledRule] = {}
        self._rules_by_subject: dict[Selector, set[int]] = {}
        self._subject_sels = SelectorIndex()
        # subjects and results
        self._subjects: LabelIndex[SubjectKey] = LabelIndex()
        self._subject_rules: dict[SubjectKey, RuleSetKey] = {}
        self._rule_set_subjects: dict[RuleSetKey, set[SubjectKey]] = {}
        self._results: dict[RuleSetKey, _Result] = {}
        self._term_users: dict[PeerTerm, set[RuleSetKey]] = {}

    # -- identities ---------------------------------------------------------------

    def upsert_identity(
        self, identity: int, labels: Mapping[str, str], cluster: str
    ) -> set[SubjectKey]:
        """An endpoint identity minted by ``cluster`` (its cluster label is set to ``cluster``)."""
        peer = Peer.endpoint(labels, cluster, identity)
        if self._peers.get(identity) == peer:
            return set()
        terms = self._drop_identity(identity)
        self._peers[identity] = peer
        self._endpoints.add(identity, peer.labels)
        found: set[PeerTerm] = {
            self._label_terms[s] for s in self._label_sels.matching(peer.labels)
        }
        found |= {t for t in self._other_terms if t.matches(peer)}
        self._add_to_terms(identity, found)
        return self._identity_changed(identity, terms | found)

    def upsert_cidr_identity(self, identity: int, prefix: str) -> set[SubjectKey]:
        """A node-local identity the datapath gives world addresses in ``prefix``."""
        if identity < MIN_LOCAL:
            raise ValueError(f"identity {identity} is reserved")
        peer = Peer.cidr(identity, prefix)
        if self._peers.get(identity) == peer:
            return set()
        terms = self._drop_identity(identity)
        self._peers[identity] = peer
        self._cidr_ids.add(identity)
        found = {t for t in self._other_terms if t.matches(peer)}
        self._add_to_terms(identity, found)
        return self._identity_changed(identity, terms | found)

    def delete_identity(self, identity: int) -> set[SubjectKey]:
        if identity < MIN_LOCAL:
            return set()  # reserved identities never go away
        return self._identity_changed(identity, self._drop_identity(identity))

    def identities(self) -> Mapping[int, Peer]:
        return self._peers

    def _add_to_terms(self, identity: int, terms: set[PeerTerm]) -> None:
        for term in terms:
            self._term_ids[term].add(identity)
        if terms:
            self._terms_of[identity] = set(terms)

    def _drop_identity(self, identity: int) -> set[PeerTerm]:
        if self._peers.pop(identity, None) is None:
            return set()
        self._endpoints.remove(identity)
        self._cidr_ids.discard(identity)
        terms = self._terms_of.pop(identity, set())
        for term in terms:
            self._term_ids[term].discard(identity)
        return terms

    def _identity_changed(self, identity: int, terms: set[PeerTerm]) -> set[SubjectKey]:
        """Replace ``identity``'s entries in every result whose rules name it (or did)."""
        touched: set[RuleSetKey] = set()
        for term in terms:
            touched |= self._term_users.get(term, set())
        changed: set[SubjectKey] = set()
        for rkey in touched:
            if self._patch(self._results[rkey], identity):
                changed |= self._rule_set_subjects.get(rkey, set())
        return changed

    def _patch(self, res: _Result, identity: int) -> bool:
        grants: dict[Direction, set[Grant]] = {d: set() for d in Direction}
        for r in res.rules:
            for item in r.items:
                if item.peers is not None and any(
                    identity in self._term_ids[t] for t in item.peers
                ):
                    grants[item.direction].update(_grants(item))
        new: dict[PolicyKey, PolicyValue] = {}
        for d in Direction:
            if grants[d] and res.policy.enforced(d):
                new.update(
                    resolve_identity(d, identity, frozenset(grants[d]), res.denies_of_any[d])
                )
        old_keys = res.keys_of.get(identity, [])
        entries = res.policy.entries
        if len(old_keys) == len(new) and all(entries.get(k) == v for k, v in new.items()):
            return False
        entries = dict(entries)
        for k in old_keys:
            del entries[k]
        entries.update(new)
        if new:
            res.keys_of[identity] = list(new)
        else:
            res.keys_of.pop(identity, None)
        res.policy = EndpointPolicy(
            res.policy.ingress_enforced, res.policy.egress_enforced, entries
        )
        return True

    # -- peer terms ---------------------------------------------------------------

    def _candidates(self, term: PeerTerm) -> Iterable[int]:
        """Identities a new entity or CIDR term may name (endpoints only for ``cluster``)."""
        if isinstance(term, LabelPeer):
            return ()
        others = self._reserved_ids | self._cidr_ids
        if isinstance(term, EntityPeer) and term.entity is Entity.CLUSTER:
            return others | set(self._endpoints.labels)
        return others

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
            ids = {i for i in self._candidates(term) if term.matches(self._peers[i])}
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
                if not ts:
                    del self._terms_of[i]
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
        changed = self._remove_rules(self._policies.pop(key, []))
        rules = compile_policy(policy)
        self._policies[key] = rules
        affected: set[SubjectKey] = set()
        for r in rules:
            self._rules[r.uid] = r
            self._rules_by_subject.setdefault(r.subject, set()).add(r.uid)
            self._subject_sels.add(r.subject)
            for item in r.items:
                for term in item.peers or ():
                    self._use_term(term)
            affected |= self._subjects.select(r.subject)
        return changed | self._reselect(affected)

    def delete_policy(self, namespace: str, name: str) -> set[SubjectKey]:
        self._sources.pop((namespace, name), None)
        return self._remove_rules(self._policies.pop((namespace, name), []))

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
            affected |= self._subjects.select(r.subject)
        # every subject these rules selected moves to another rule set (and the
        # results of the old ones go), before their terms are released
        changed = self._reselect(affected)
        for r in rules:
            for item in r.items:
                for term in item.peers or ():
                    self._release_term(term)
        return changed

    # -- subjects -----------------------------------------------------------------

    def _selecting(self, labels: Mapping[str, str]) -> RuleSetKey:
        uids: set[int] = set()
        for sel in self._subject_sels.matching(labels):
            uids |= self._rules_by_subject[sel]
        return frozenset(uids)

    def _move(self, skey: SubjectKey, new: RuleSetKey | None) -> None:
        old = self._subject_rules.pop(skey, None)
        if old is not None:
            users = self._rule_set_subjects[old]
            users.discard(skey)
            if not users:
                del self._rule_set_subjects[old]
                self._drop_result(old)
        if new is not None:
            self._subject_rules[skey] = new
            self._rule_set_subjects.setdefault(new, set()).add(skey)

    def _reselect(self, subjects: set[SubjectKey]) -> set[SubjectKey]:
        """Subjects whose set of selecting rules changed (their entries may have too)."""
        changed: set[SubjectKey] = set()
        for s in subjects:
            new = self._selecting(self._subjects.labels[s])
            if new != self._subject_rules.get(s):
                self._move(s, new)
                changed.add(s)
        return changed

    def _drop_result(self, key: RuleSetKey) -> None:
        r = self._results.pop(key, None)
        if r is None:
            return
        for term in r.terms:
            users = self._term_users.get(term)
            if users is not None:
                users.discard(key)
                if not users:
                    del self._term_users[term]

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
            self._move(skey, self._selecting(labels))
        rkey = self._subject_rules[skey]
        result = self._results.get(rkey)
        if result is None:
            result = self._results[rkey] = self._build(rkey)
            for term in result.terms:
                self._term_users.setdefault(term, set()).add(rkey)
        return result.policy

    def forget(self, labels: Mapping[str, str]) -> None:
        skey = subject_key({**labels, CLUSTER_LABEL: self.cluster})
        if skey in self._subject_rules:
            self._subjects.remove(skey)
            self._move(skey, None)

    def _build(self, rkey: RuleSetKey) -> _Result:
        rules = [self._rules[u] for u in sorted(rkey)]
        terms: set[PeerTerm] = set()
        grants: dict[Direction, dict[int, set[Grant]]] = {d: {} for d in Direction}
        enforced = {d: any(d in r.enforces for r in rules) for d in Direction}
        for r in rules:
            for item in r.items:
                new = _grants(item)
                by_id = grants[item.direction]
                if item.peers is None:
                    by_id.setdefault(ANY_IDENTITY, set()).update(new)
                    continue
                found: set[int] = set()
                for term in item.peers:
                    terms.add(term)
                    found |= self._term_ids[term]
                for i in found:
                    by_id.setdefault(i, set()).update(new)
        if enforced[Direction.INGRESS] and self.allow_host:
            host = grants[Direction.INGRESS].setdefault(ReservedIdentity.HOST, set())
            host.add(Grant(None, Action.ALLOW, str(HOST_RULE)))
        entries: dict[PolicyKey, PolicyValue] = {}
        denies: dict[Direction, list[Grant]] = {}
        for d in Direction:
            frozen = {i: frozenset(g) for i, g in grants[d].items()} if enforced[d] else {}
            denies[d] = any_denies(frozen)
            entries.update(resolve(d, frozen))
        keys_of: dict[int, list[PolicyKey]] = {}
        for k in entries:
            keys_of.setdefault(k.identity, []).append(k)
        policy = EndpointPolicy(enforced[Direction.INGRESS], enforced[Direction.EGRESS], entries)
        return _Result(rules, policy, terms, keys_of, denies)


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
