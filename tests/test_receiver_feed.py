"""Processing right behind the receiver: stored reports are processed in batches by the
worker's feed thread, never in the request that brought them."""

from __future__ import annotations

import threading
import time

from patchwatch.domain.settings import Settings
from patchwatch.receiver import feed as feed_module
from patchwatch.receiver.app import create_app
from patchwatch.store.models import Host
from patchwatch.store.models import Report
from patchwatch.store.tokens import create_token
from tests.support.reports import native_doc


def test_stored_reports_are_processed_in_batches_behind_the_answers(db, tmp_path, monkeypatch):
    client = create_app(Settings(data_dir=str(tmp_path)), db=db).test_client()  # inline
    _, enroll = create_token("enroll", time.time())
    calls: list[tuple[str, int]] = []
    hold = threading.Event()
    real = feed_module.process_pending

    def recording(now, limit=1000, host_name=None, force=False, ids=None):
        hold.wait(10)  # the first batch waits: the next reports gather behind it
        calls.append((threading.current_thread().name, len(ids)))
        return real(now, limit=limit, host_name=host_name, force=force, ids=ids)

    monkeypatch.setattr(feed_module, "process_pending", recording)
    for i in range(12):
        r = client.post("/api/v1/reports", json=native_doc(f"h{i}.example.com"),
                        headers={"Authorization": f"Bearer {enroll}"})  # fmt: skip
        assert r.status_code == 202  # answered while processing is held
    assert Report.select().where(Report.state == "processed").count() == 0
    hold.set()
    assert feed_module.FEED.idle()
    assert Report.select().where(Report.state == "processed").count() == 12
    assert Host.select().count() == 12
    assert {name for name, _ in calls} == {"processing-feed"}
    assert sum(n for _, n in calls) == 12 and len(calls) < 12  # batched


def test_a_failed_batch_stays_queued_for_the_scheduler(db, tmp_path, monkeypatch, caplog):
    client = create_app(Settings(data_dir=str(tmp_path)), db=db).test_client()
    _, enroll = create_token("enroll", time.time())

    def failing(*_a, **_k):
        raise OSError("the store went away")

    monkeypatch.setattr(feed_module, "process_pending", failing)
    r = client.post("/api/v1/reports", json=native_doc("h1.example.com"),
                    headers={"Authorization": f"Bearer {enroll}"})  # fmt: skip
    assert r.status_code == 202
    assert feed_module.FEED.idle()
    assert Report.get_by_id(r.get_json()["report"]).state == "pending"
    assert "left queued" in caplog.text
