"""End-to-end fixtures: a real lab (namespaces, etcd, podman, agents) per test session.

``lab`` is one cluster of two nodes named "gliat" (so a user's own "glia" lab
is never touched), brought up once per session and torn down at the end, also
when a test or the bring-up fails; the teardown then checks that nothing of
the lab is left on the machine. ``mesh`` is two clusters of two nodes
("gliamesh", or $GLIA_E2E_MESH_LAB), brought up by the first test that asks
for it and shared by the ClusterMesh modules. Shared helpers live in
``labhelpers.py``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from labhelpers import E2E_LAB, MESH_LAB, Workload, lab_dir, leftovers

from glia.lab.lab import Lab


@pytest.fixture(scope="session")
def lab() -> Iterator[Lab]:
    the_lab = Lab.open(E2E_LAB, lab_dir(E2E_LAB), clusters=1, nodes=2)
    try:
        the_lab.up(recreate=True)
        yield the_lab
    finally:
        report = the_lab.down()
        left = leftovers(the_lab)
        assert not left and not report.problems, (left, report.problems)


@pytest.fixture(scope="session")
def mesh() -> Iterator[Lab]:
    the_lab = Lab.open(MESH_LAB, lab_dir(MESH_LAB), clusters=2, nodes=2)
    try:
        the_lab.up(recreate=True)
        yield the_lab
    finally:
        report = the_lab.down()
        left = leftovers(the_lab)
        assert not left and not report.problems, (left, report.problems)


@pytest.fixture
def work(lab: Lab) -> Iterator[Workload]:
    """Containers, Services and processes of one test, removed afterwards (also on failure)."""
    w = Workload(lab)
    try:
        yield w
    finally:
        w.close()
