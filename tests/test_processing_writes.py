"""Host writes in groups: one claim, one insert of new hosts, one replacement of modules
and reported updates per group of reports; each host's reports still applied in order."""

from __future__ import annotations

from patchwatch.domain.protocols import NATIVE
from patchwatch.pipeline.processing import WRITE_GROUP
from patchwatch.pipeline.processing import process_pending
from patchwatch.pipeline.processing import store_report
from patchwatch.store.models import Host
from patchwatch.store.models import Module
from patchwatch.store.models import Report
from patchwatch.store.models import ReportedUpdate


def _doc(host: str, kernel: str, updates: list[str], modules: list[str]) -> dict:
    return {
        "version": 1, "host": host, "kernel": kernel, "arch": "x86_64",
        "os": {"id": "rocky", "version_id": "9"},
        "packages": [{"name": "bash", "version": "5.1", "release": "1.el9",
                      "arch": "x86_64", "type": "rpm"}],
        "updates": [{"name": u, "version": "2", "arch": "x86_64", "security": False}
                    for u in updates],
        "modules": [{"name": m, "stream": "1"} for m in modules],
        "repositories": [],
    }  # fmt: skip


def test_a_hosts_reports_in_one_batch_end_in_its_last_state(db) -> None:
    """Three reports of one host between other hosts' reports, all in one batch: each
    is applied after the one before, so the host ends with the last one's kernel,
    updates and modules, none of the earlier ones' rows left."""
    others = [f"h{i:03d}" for i in range(2 * WRITE_GROUP + 3)]
    at = 1.0
    for i, kernel in enumerate(("k1", "k2", "k3")):  # within the first group of writes
        for name in others[2 * i : 2 * i + 2]:
            store_report(name, NATIVE, _doc(name, "k0", ["x"], ["m"]), at)
            at += 1
        store_report("web1", NATIVE, _doc("web1", kernel, [f"u{i}", "v"], [f"mod{i}"]), at)
        at += 1
    for name in others[6:]:  # and more groups after it
        store_report(name, NATIVE, _doc(name, "k0", ["x"], ["m"]), at)
        at += 1

    assert process_pending(at) == {"processed": len(others) + 3}

    web1 = Host.get(Host.name == "web1")
    assert web1.kernel == "k3"
    assert sorted(u.name for u in ReportedUpdate.select().where(ReportedUpdate.host == web1)) == [
        "u2",
        "v",
    ]
    assert [m.name for m in Module.select().where(Module.host == web1)] == ["mod2"]
    assert Host.select().count() == len(others) + 1
    assert ReportedUpdate.select().count() == len(others) + 2
    assert Module.select().count() == len(others) + 1
    assert Report.select().where(Report.state != "processed").count() == 0


def test_a_report_of_a_host_seen_before_replaces_its_rows(db) -> None:
    store_report("web1", NATIVE, _doc("web1", "k1", ["a", "b"], ["m1", "m2"]), 1.0)
    assert process_pending(2.0) == {"processed": 1}
    store_report("web1", NATIVE, _doc("web1", "k2", [], []), 3.0)
    assert process_pending(4.0) == {"processed": 1}
    web1 = Host.get(Host.name == "web1")
    assert web1.kernel == "k2"
    assert ReportedUpdate.select().count() == Module.select().count() == 0


def test_the_collector_is_as_it_was_after_a_batch(db, monkeypatch) -> None:
    """A batch runs with the cyclic collector paused; after it, on and off alike, the
    collector is as the caller had it, also when the batch fails."""
    import gc

    from patchwatch.pipeline import processing

    store_report("web1", NATIVE, _doc("web1", "k1", [], []), 1.0)
    assert gc.isenabled()
    assert process_pending(2.0) == {"processed": 1}
    assert gc.isenabled()
    gc.disable()
    try:
        store_report("web1", NATIVE, _doc("web1", "k2", [], []), 3.0)
        assert process_pending(4.0) == {"processed": 1}
        assert not gc.isenabled()
    finally:
        gc.enable()
    store_report("web1", NATIVE, _doc("web1", "k3", [], []), 5.0)
    paused = []

    def failing(rows: object, force: bool) -> None:
        paused.append(gc.isenabled())
        raise RuntimeError("the batch fails")

    monkeypatch.setattr(processing, "_prepare_batch", failing)
    try:
        process_pending(6.0)
    except RuntimeError:
        pass
    assert paused == [False]
    assert gc.isenabled()
