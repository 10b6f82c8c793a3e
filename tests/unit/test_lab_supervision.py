"""When the lab's supervisor restarts a daemon (glia.lab.supervision): pure, no processes."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from glia.lab import supervision, topology
from glia.lab.supervision import Action, Event, Kind, Policy, Watch, restart_failed, restarted, step

POLICY = Policy(base=0.5, cap=30.0, reset_after=60.0)


def test_backoff_doubles_from_half_a_second_to_thirty() -> None:
    assert [POLICY.delay(n) for n in range(8)] == [0.5, 1, 2, 4, 8, 16, 30, 30]
    assert POLICY.delay(10_000) == 30.0


def test_negative_failures_are_refused() -> None:
    with pytest.raises(ValueError, match="failures"):
        POLICY.delay(-1)


@given(st.integers(min_value=0, max_value=200))
def test_backoff_is_monotonic_and_capped(n: int) -> None:
    assert POLICY.base <= POLICY.delay(n) <= POLICY.delay(n + 1) <= POLICY.cap


def _step(
    w: Watch, *, alive: bool, now: float, stopped: bool = False, started: float = 0.0
) -> supervision.Step:
    return step(w, alive=alive, stopped=stopped, started=started, now=now, policy=POLICY)


def test_a_live_daemon_needs_nothing() -> None:
    s = _step(Watch(), alive=True, now=100.0)
    assert s.watch == Watch() and s.action is Action.NONE and s.event is None


def test_a_crash_is_noted_then_restarted_after_the_base_delay() -> None:
    found = _step(Watch(), alive=False, now=100.0)
    assert found.event is Event.DIED and found.action is Action.NONE
    assert found.watch.down_since == 100.0 and found.watch.retry_at == 100.5
    assert found.watch.last_exit == 100.0
    early = _step(found.watch, alive=False, now=100.4)
    assert early.action is Action.NONE and early.event is None and early.watch == found.watch
    due = _step(found.watch, alive=False, now=100.5)
    assert due.action is Action.RESTART
    after = restarted(due.watch, 100.6)
    assert after.restarts == 1 and after.failures == 1 and after.last_restart == 100.6
    assert after.down_since is None and after.retry_at is None and after.last_exit == 100.0


def test_a_crash_loop_backs_off_and_a_stable_run_resets_it() -> None:
    w, now, waits = Watch(), 0.0, []
    for _ in range(8):  # dies at once after every restart
        found = _step(w, alive=False, now=now)
        assert found.watch.retry_at is not None
        waits.append(found.watch.retry_at - now)
        now = found.watch.retry_at
        assert _step(found.watch, alive=False, now=now).action is Action.RESTART
        w = restarted(found.watch, now)
    assert waits == [0.5, 1, 2, 4, 8, 16, 30, 30]
    assert w.restarts == 8 and w.failures == 8
    # Up for less than reset_after: still backing off.
    assert _step(w, alive=True, now=now + 59, started=now).watch.failures == 8
    stable = _step(w, alive=True, now=now + 60, started=now)
    assert stable.watch.failures == 0 and stable.event is Event.STABLE
    assert stable.watch.restarts == 8  # the count stays for `lab status`
    assert _step(stable.watch, alive=False, now=now + 61).watch.retry_at == now + 61.5


def test_a_daemon_stopped_on_purpose_is_left_down() -> None:
    s = _step(Watch(), alive=False, stopped=True, now=5.0)
    assert s.action is Action.NONE and s.event is None and s.watch == Watch()
    # Found dead, then stopped on purpose before its restart: the restart is dropped.
    found = _step(Watch(), alive=False, now=5.0).watch
    dropped = _step(found, alive=False, stopped=True, now=9.0)
    assert dropped.action is Action.NONE
    assert dropped.watch.down_since is None and dropped.watch.retry_at is None


def test_a_daemon_started_by_someone_else_is_no_longer_dead() -> None:
    found = _step(Watch(), alive=False, now=5.0).watch
    back = _step(found, alive=True, now=5.2, started=5.1)
    assert back.event is Event.STARTED_ELSEWHERE and back.action is Action.NONE
    assert back.watch.down_since is None and back.watch.retry_at is None
    assert back.watch.restarts == 0  # not the supervisor's restart


def test_a_restart_that_cannot_spawn_backs_off_too() -> None:
    found = _step(Watch(), alive=False, now=10.0).watch
    failed = restart_failed(found, 10.5, "cannot start glia: No such file", POLICY)
    assert failed.failures == 1 and failed.retry_at == 11.5 and failed.restarts == 0
    assert "No such file" in failed.last_error
    assert _step(failed, alive=False, now=11.4).action is Action.NONE
    assert _step(failed, alive=False, now=11.5).action is Action.RESTART
    assert restarted(failed, 11.6).last_error == ""


@given(
    st.lists(
        st.tuples(st.booleans(), st.booleans(), st.floats(min_value=0.0, max_value=5.0)),
        max_size=40,
    )
)
def test_restarts_only_when_dead_unstopped_and_due(polls: list[tuple[bool, bool, float]]) -> None:
    w, now = Watch(), 1000.0
    for alive, stopped, dt in polls:
        now += dt
        s = _step(w, alive=alive, stopped=stopped, now=now)
        if s.action is Action.RESTART:
            assert not alive and not stopped
            assert s.watch.retry_at is not None and now >= s.watch.retry_at
            w = restarted(s.watch, now)
        else:
            w = s.watch
        if alive or stopped:
            assert w.down_since is None and w.retry_at is None
        assert w.failures <= w.restarts


def _topo() -> topology.Topology:
    return topology.build("gliat", 2, 2, Path("/run/glia/lab-gliat"))


def test_daemons_in_start_order() -> None:
    names = [d.process for d in supervision.daemons(_topo())]
    assert names == [
        "c1-etcd",
        "c2-etcd",
        "c1-operator",
        "c2-operator",
        "c1-n1-agent",
        "c1-n2-agent",
        "c2-n1-agent",
        "c2-n2-agent",
    ]
    assert [d.process for d in supervision.daemons(_topo(), agents=False)] == [
        "c1-etcd",
        "c2-etcd",
    ]


def test_restart_commands() -> None:
    by_name = {d.process: d for d in supervision.daemons(_topo())}
    assert by_name["c2-n1-agent"].kind is Kind.AGENT
    assert by_name["c2-n1-agent"].restart_command("glia") == "glia lab restart c2/n1"
    assert (
        by_name["c1-operator"].restart_command("gliat")
        == "glia lab restart c1 --operator --lab gliat"
    )
    assert by_name["c2-etcd"].restart_command("glia") == "glia lab restart c2 --etcd"


def test_supervisor_command_line_holds_its_token() -> None:
    topo = _topo()
    argv = supervision.supervisor_argv("/venv/bin/glia", topo)
    assert argv[1:3] == ["lab", "supervise"]
    assert supervision.supervisor_token(topo) in " ".join(argv)
    # Another lab's supervisor never matches (lab names hold no space or "-").
    other = topology.build("gliatx", 1, 1, Path("/run/glia/lab-gliatx"))
    assert supervision.supervisor_token(topo) not in " ".join(
        supervision.supervisor_argv("/venv/bin/glia", other)
    )
