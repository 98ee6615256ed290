"""Health: the alert rule (pure, hypothesis), alert and recovery mails through the
real outbox with a controllable clock, `maild status --json`, and the Prometheus
endpoint scraped over loopback."""
from __future__ import annotations

import json
import time
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from maild.cli.main import main
from maild.config import load_config
from maild.ops.daemon import Daemon
from maild.ops.health import Problem, alert_transitions, plan_alerts
from tests.helpers import Clock, make_mail, write_config
from tests.servers.common import free_port
from tests.e2e.test_daemon import FAST, imap_table

UTC = timezone.utc
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
HEALTH = "\n[health]\nfetch_stale_minutes = 30\noutbox_stale_minutes = 30\n"




# ---------------------------------------------------------------- the rule


@given(st.lists(st.sets(st.sampled_from(["fetch", "outbox"])), max_size=30))
def test_one_alert_and_one_recovery_per_occurrence(history: list[set[str]]) -> None:
    alerted: dict[str, datetime] = {}
    sent: list[tuple[str, bool]] = []
    for step, current in enumerate(history):
        mails, alerted = plan_alerts({k: Problem(k) for k in current}, alerted, T0 + timedelta(minutes=step))
        sent += [(m.key, m.recovered) for m in mails]
        assert set(alerted) == current
    for key in ("fetch", "outbox"):
        # occurrences: runs of consecutive steps in which the problem is present
        runs = sum(1 for i, cur in enumerate(history) if key in cur and (i == 0 or key not in history[i - 1]))
        ended = runs - (1 if history and key in history[-1] else 0)
        assert sent.count((key, False)) == runs
        assert sent.count((key, True)) == ended


def test_dedupe_keys_differ_per_occurrence() -> None:
    first, alerted = plan_alerts({"fetch": Problem("down")}, {}, T0)
    recovered, alerted = plan_alerts({}, alerted, T0 + timedelta(hours=1))
    again, _ = plan_alerts({"fetch": Problem("down")}, alerted, T0 + timedelta(hours=2))
    keys = [m.dedupe_key for m in first + recovered + again]
    assert len(set(keys)) == 3
    assert alert_transitions({"fetch": "x"}, {"fetch"}) == ({}, set())


# ---------------------------------------------------------------- alert mails, real servers


def alerts(sink: Any) -> list[str]:
    return [str(m.parsed["Subject"]) for m in sink.messages if "maild" in str(m.parsed["Subject"])]


def test_fetch_alert_once_then_recovered_once(tmp_path: Path, imap_account: Any, smtp_sink: Any) -> None:
    config = write_config(tmp_path, source=imap_table(imap_account, timeout=2), smtp_port=smtp_sink.port,
                          extra=FAST + HEALTH)
    clock = Clock(T0)
    daemon = Daemon(load_config(config), clock)
    assert daemon.turn()
    server = imap_account.server
    server.stop()
    try:
        assert not daemon.turn()
        clock.advance(minutes=20)
        assert not daemon.turn()
        assert alerts(smtp_sink) == []
        clock.advance(minutes=11)
        assert not daemon.turn()
        smtp_sink.wait_for(1)
        clock.advance(minutes=30)
        assert not daemon.turn()
        assert not daemon.turn()
    finally:
        server.start()
    assert alerts(smtp_sink) == ["maild ALARM: pobieranie poczty"], "one alert, in the manager's language"
    assert smtp_sink.messages[0].rcpt_tos == ["szef@firma.pl"]
    body = smtp_sink.messages[0].parsed.get_content()
    # the last fetch (09:00 UTC) in the business time zone, as the manager reads it
    assert ("Nie udało się pobrać poczty ze skrzynki od poniedziałku 2.03.2026 r., godz. 10:00; "
            "dopuszczalna przerwa to 30 min.") in body, body
    assert "T09:" not in body and "+00:00" not in body, body
    assert "mailbox" not in body and "successful" not in body, "the manager's language throughout"
    clock.advance(minutes=1)
    assert daemon.turn()
    smtp_sink.wait_for(2)
    assert daemon.turn()
    assert alerts(smtp_sink) == ["maild ALARM: pobieranie poczty", "maild działa ponownie: pobieranie poczty"]
    # the alerted set is in the database: a new daemon repeats nothing
    again = Daemon(load_config(config), clock)
    clock.advance(minutes=5)
    assert again.turn()
    assert len(alerts(smtp_sink)) == 2
    again.source.close()
    daemon.source.close()


def test_outbox_alert_waits_for_smtp_then_recovered(tmp_path: Path, imap_account: Any, smtp_sink: Any) -> None:
    config = write_config(tmp_path, source=imap_table(imap_account), smtp_port=smtp_sink.port, extra=FAST + HEALTH)
    clock = Clock(T0)
    daemon = Daemon(load_config(config), clock)
    smtp_sink.stop()
    imap_account.append(make_mail())
    assert daemon.turn()
    clock.advance(minutes=31)
    assert daemon.turn()  # alert queued; the relay is down, so it waits in the outbox
    with daemon.sessions() as session:
        from maild.ops.health import read_health
        assert read_health(session, clock()).outbox_depth == 2
    smtp_sink.start()
    time.sleep(1.1)  # the relay backoff (retry_min_seconds) passes
    assert daemon.turn()
    assert daemon.turn()
    subjects = [str(m.parsed["Subject"]) for m in smtp_sink.wait_for(3)]
    assert subjects[1:] == ["maild ALARM: wysyłka poczty", "maild działa ponownie: wysyłka poczty"]
    alert = smtp_sink.messages[1].parsed.get_content()
    assert "Niewysłane wiadomości: 1; najstarsza czeka od 31 min (limit: 30 min)." in alert
    assert "Alarm trwa od poniedziałku 2.03.2026 r., godz. 10:31;" in alert, alert
    assert "[SUP-1]" in subjects[0] or "SUP-1" in subjects[0]
    assert daemon.turn()
    assert len(smtp_sink.messages) == 3
    daemon.source.close()


# ---------------------------------------------------------------- status and metrics


def test_status_json_after_a_cycle(tmp_path: Path, imap_account: Any, smtp_sink: Any,
                                   capsys: pytest.CaptureFixture[str], restore_logging: Any) -> None:
    config = write_config(tmp_path, source=imap_table(imap_account), smtp_port=smtp_sink.port, extra=FAST)
    imap_account.append(make_mail())
    assert main(["--config", str(config), "run", "--once"]) == 0
    capsys.readouterr()
    assert main(["--config", str(config), "status", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["mail_waiting"] == 0 and data["outbox_depth"] == 0 and data["open_tickets"] == 1
    assert data["last_fetch_at"].endswith("Z") and data["nearest_due"][0]["ref"] == "SUP-1"
    assert main(["--config", str(config), "status"]) == 0
    assert "mail waiting:   0" in capsys.readouterr().out


def test_prometheus_endpoint_over_loopback(tmp_path: Path, imap_account: Any, smtp_sink: Any) -> None:
    port = free_port()
    config = write_config(tmp_path, source=imap_table(imap_account), smtp_port=smtp_sink.port,
                          extra=FAST + f'\n[metrics]\nlisten = "127.0.0.1:{port}"\n')
    daemon = Daemon(load_config(config))
    assert daemon.metrics is not None
    daemon.metrics.serve(f"127.0.0.1:{port}")
    try:
        imap_account.append_many([
            make_mail(msgid="<a@acme.pl>"),
            make_mail(sender="kari@nord.no", msgid="<b@nord.no>"),
            make_mail(msgid="<c@acme.pl>", headers={"X-Maild-Origin": "maild"}),  # our own mail came back
        ])
        assert daemon.turn()
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    finally:
        daemon.metrics.close()
        daemon.source.close()
    values = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
              for line in text.splitlines() if line.startswith("maild_")}
    assert values['maild_messages_total{disposition="ticket"}'] == 2
    assert values['maild_messages_total{disposition="discard"}'] == 1
    assert values['maild_open_tickets{tier="sla"}'] == 1
    assert values['maild_open_tickets{tier="prepaid"}'] == 1
    assert values["maild_outbox_sent_total"] == 2
    assert values["maild_outbox_depth"] == 0 and values["maild_outbox_oldest_unsent_seconds"] == 0
    assert 0 < values["maild_seconds_to_nearest_breach"] <= 4 * 24 * 3600
    assert values["maild_escalations_total"] == 0 and values["maild_quarantined"] == 0
