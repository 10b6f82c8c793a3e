"""The identity-relevant labels filter: defaults, include/exclude, reserved labels, bad rules."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from glia.agent import config as agent_config
from glia.identity.labelfilter import DEFAULT_EXCLUDE, RESERVED, LabelFilter, matches
from glia.model.codec import InvalidValue
from glia.model.identity import CLUSTER_LABEL, NAMESPACE_LABEL

# What `podman pod create --label app=pweb` reports for the pod's infra container.
PODMAN_INFRA = {
    "app": "pweb",
    "io.buildah.version": "1.28.2",
    NAMESPACE_LABEL: "shop",
}


def test_default_drops_image_metadata_and_controller_noise() -> None:
    labels = {
        **PODMAN_INFRA,
        "org.opencontainers.image.source": "https://example.org/x",
        "org.label-schema.build-date": "2020",
        "io.containers.autoupdate": "registry",
        "io.podman.annotations.foo": "x",
        "com.docker.compose.project": "shop",
        "maintainer": "someone",
        "PODMAN_SYSTEMD_UNIT": "web.service",
        "pod-template-hash": "5d8f7c",
        "controller-revision-hash": "abc",
        "pod-template-generation": "3",
        "statefulset.kubernetes.io/pod-name": "db-0",
        "apps.kubernetes.io/pod-index": "0",
        "batch.kubernetes.io/job-completion-index": "4",
        "tier": "frontend",
        "app.kubernetes.io/name": "web",
    }
    assert LabelFilter().apply(labels) == {
        "app": "pweb",
        NAMESPACE_LABEL: "shop",
        "tier": "frontend",
        "app.kubernetes.io/name": "web",
    }


def test_identical_pods_with_different_buildah_versions_agree() -> None:
    a = LabelFilter().apply({**PODMAN_INFRA, "io.buildah.version": "1.28.2"})
    b = LabelFilter().apply({**PODMAN_INFRA, "io.buildah.version": "1.33.7"})
    assert a == b


@pytest.mark.parametrize(
    ("entry", "key", "hit"),
    [
        ("io.buildah.", "io.buildah.version", True),
        ("io.buildah", "io.buildah.version", True),
        ("io.buildah", "io.buildahx", False),
        ("app", "app", True),
        ("app", "app.kubernetes.io/name", True),
        ("app", "application", False),
        ("maintainer", "maintainers", False),
        ("example.com/", "example.com/team", True),
        ("example.com", "example.com/team", True),
        ("team", "example.com/team", False),
    ],
)
def test_matching(entry: str, key: str, hit: bool) -> None:
    assert matches(entry, key) is hit


def test_include_keeps_only_matching_then_exclude_drops() -> None:
    f = LabelFilter(include=("app", "tier"), exclude=("app.kubernetes.io",))
    labels = {"app": "w", "app.kubernetes.io/name": "w", "tier": "fe", "version": "2"}
    assert f.apply(labels) == {"app": "w", "tier": "fe"}


def test_empty_exclude_keeps_everything() -> None:
    assert LabelFilter(exclude=()).apply(PODMAN_INFRA) == PODMAN_INFRA


@given(st.dictionaries(st.text(max_size=12), st.text(max_size=4)))
def test_reserved_labels_always_stay(extra: dict[str, str]) -> None:
    labels = {**extra, NAMESPACE_LABEL: "shop", CLUSTER_LABEL: "c1"}
    strict = LabelFilter(include=("nothing.matches",), exclude=("io.kubernetes", "io.cilium"))
    for f in (LabelFilter(), strict):
        kept = f.apply(labels)
        assert kept[NAMESPACE_LABEL] == "shop" and kept[CLUSTER_LABEL] == "c1"
        assert kept.items() <= labels.items()
        assert f.apply(kept) == kept  # a restored record filters to itself


@pytest.mark.parametrize(
    ("entry", "why"),
    [
        ("", "empty"),
        ("app=web", "key=value"),
        ("!io.buildah", "'!'"),
        (".*beta.kubernetes.io", "pattern"),
        ("k8s:app", "source"),
        ("io buildah", "whitespace"),
        (NAMESPACE_LABEL, "reserved"),
    ],
)
def test_bad_exclude_entries_are_refused(entry: str, why: str) -> None:
    with pytest.raises(ValueError, match=r"identity_labels_exclude\[1\].*" + why):
        LabelFilter(exclude=("io.buildah.", entry))


def test_include_may_name_a_reserved_label_but_no_bad_entry() -> None:
    LabelFilter(include=RESERVED)
    with pytest.raises(ValueError, match=r"identity_labels_include\[0\] 'a=b'"):
        LabelFilter(include=("a=b",))


def _load(tmp_path: Path, extra: str) -> agent_config.AgentConfig:
    path = tmp_path / "agent.yaml"
    path.write_text("cluster: c1\ncluster_id: 1\nnode: n1\nnode_ip: 10.0.0.1\n" + extra)
    return agent_config.load(path)


def test_agent_config_defaults_and_overrides(tmp_path: Path) -> None:
    assert _load(tmp_path, "").label_filter() == LabelFilter()
    assert tuple(_load(tmp_path, "").identity_labels_exclude) == DEFAULT_EXCLUDE
    cfg = _load(tmp_path, "identity_labels_exclude: []\nidentity_labels_include: [app]\n")
    assert cfg.label_filter() == LabelFilter(exclude=(), include=("app",))


@pytest.mark.parametrize(
    "extra",
    [
        "identity_labels_exclude: [io.buildah., 'app=web']\n",
        "identity_labels_include: ['']\n",
        "identity_labels_exclude: io.buildah.\n",
    ],
)
def test_agent_config_refuses_bad_rules_at_load(tmp_path: Path, extra: str) -> None:
    with pytest.raises(InvalidValue, match="identity_labels_"):
        _load(tmp_path, extra)
