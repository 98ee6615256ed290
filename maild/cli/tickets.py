"""``maild tickets list|show``: the queue and one ticket with its thread."""
from __future__ import annotations

import argparse
import sys
from datetime import date, datetime, timezone
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from maild.cli.common import Commands, UsageError, ticket_number
from maild.cli.output import iso, local, print_json, print_json_stream, print_table_stream, short_local
from maild.rules.kinds import TIER_NAMES, rules_of

if TYPE_CHECKING:
    from sqlalchemy import Connection, Engine, Row

    from maild.config import Config
    from maild.storage import queries

UTC = timezone.utc


def ticket_json(cfg: Config, t: Row[Any], rank: int | None, messages: int,
                expected: date | None = None) -> dict[str, Any]:
    """A ticket's JSON (``tickets list --json``, ``tickets show --json``) from its row in ``tables.tickets``."""
    from maild.storage.queries import ticket_ref

    return {
        "ref": ticket_ref(cfg.support.ticket_prefix, t.id),
        "subject": t.subject,
        "status": t.status,
        "customer": t.customer_id,
        "contract_id": t.contract_id,
        "contract_kind": t.contract_kind,
        "verified": t.verified,
        "tier": TIER_NAMES[t.tier],
        "priority": t.priority,
        "rank": rank,
        # the same number under the name the queue estimate uses (issue 15); null when not open
        "queue_position": rank,
        "expected_by": expected.isoformat() if expected else None,
        "peak": t.peak,
        "scope": t.scope,
        "requester": t.requester,
        "assigned_to": t.assigned_to,
        "created_at": iso(t.created_at),
        "updated_at": iso(t.updated_at),
        "reaction_due": iso(t.reaction_due),
        "first_response_at": iso(t.first_response_at),
        "resolved_at": iso(t.resolved_at),
        "escalation_level": t.escalation_level,
        "breached": t.breached_at is not None,
        "linked_to": ticket_ref(cfg.support.ticket_prefix, t.linked_to) if t.linked_to else None,
        "messages": messages,
        "reasons": list(t.reasons or []),
    }


def ticket_filter(args: argparse.Namespace, now: datetime) -> queries.TicketFilter:
    """``--customer --assigned --tier --overdue``; they combine (and), and with any paging of the list."""
    from maild.storage import queries

    return queries.TicketFilter(
        customer=getattr(args, "customer", None),
        assigned=getattr(args, "assigned", None),
        tier=TIER_NAMES.index(args.tier) if getattr(args, "tier", None) else None,
        overdue_at=now if getattr(args, "overdue", False) else None,
    )


TEXT_LIMIT = 100


def cmd_tickets_list(cfg: Config, engine: Engine, args: argparse.Namespace) -> int:
    """The queue, streamed: text shows the count and the first ``--limit`` (100) tickets; JSON all unless limited.

    ``--after REF`` continues behind REF in queue order, so a script pages
    through a long queue with ``--limit N --after <last ref of the page>``.
    Both read on a Connection (``storage.queries``, no ORM), the JSON one with the
    team's estimate (``desk.team``, in Core too).
    """
    from maild.storage import queries

    now = datetime.now(UTC)
    where = ticket_filter(args, now)
    if where.customer is not None:
        with engine.connect() as conn:
            if not queries.customer_known(conn, where.customer):
                # "0 tickets" would read as a customer with nothing open
                raise UsageError(f"tickets list --customer {where.customer}: no such customer "
                                 "(the ids are the customers file's; `maild contracts list` shows them)")
    limit = None if args.all else (args.limit if args.limit is not None else (None if args.json else TEXT_LIMIT))
    prefix = cfg.support.ticket_prefix
    if args.json:
        with engine.connect() as conn:
            return _list_json(cfg, conn, args, where, limit, now)
    with engine.connect() as conn:
        after = None
        if args.after is not None:
            after = queries.find_ticket_by_ref(conn, args.after, prefix)
            if after is None:
                raise UsageError(f"tickets list --after {args.after}: no such ticket")
        chunks = queries.stream_tickets(conn, args.status, where, after=after, limit=limit)
        total = queries.count_tickets(conn, args.status, where)
        print(f"{total} ticket{'' if total == 1 else 's'}")
        tz = ZoneInfo(cfg.calendar.timezone)
        zone = now.astimezone(tz).tzname()
        shown: list[str] = []

        def rows(chunk: list[queries.ListedTicket]) -> list[list[Any]]:
            out = []
            for x in chunk:
                t, ref = x.ticket, queries.ticket_ref(prefix, x.ticket.id)
                shown.append(ref)
                out.append([x.rank or "-", ref, t.status, TIER_NAMES[t.tier], t.priority,
                            t.customer_id or t.requester, short_local(t.reaction_due, tz, zone), t.subject])
            return out

        print_table_stream(
            ["#", "ref", "status", "tier", "P", "customer", f"due {zone}", "subject"],
            (rows(chunk) for chunk in chunks), shrink=((5, 12), (7, 24), (5, 8), (7, 8)), sep=" ",
        )
    if limit is not None and len(shown) == limit and (after is not None or total > limit):
        print(f"(the first {limit}; next: --after {shown[-1]}; every ticket: --all)")
    return 0


def _list_json(cfg: Config, session: Connection, args: argparse.Namespace, where: queries.TicketFilter,
               limit: int | None, now: datetime) -> int:
    """``tickets list --json``: every ticket's JSON, with the team's estimate for help without a deadline."""
    from maild.desk.context import business_calendar
    from maild.desk.team import Team
    from maild.storage import queries

    after = None
    if args.after is not None:
        after = queries.find_ticket_by_ref(session, args.after, cfg.support.ticket_prefix)
        if after is None:
            raise UsageError(f"tickets list --after {args.after}: no such ticket")
    chunks = queries.stream_tickets(session, args.status, where, after=after, limit=limit)
    team = Team(session, cfg, business_calendar(cfg, write=False))  # the daemon's kept holidays, read only

    def expected(x: queries.ListedTicket) -> date | None:
        # An estimate for help without a deadline only; an sla ticket has its deadline.
        t = x.ticket
        if x.rank is None or not t.verified or rules_of(t.contract_kind).reaction_deadline:
            return None
        return team.expected_by(x.rank, now, tier=t.tier, priority=t.priority)

    print_json_stream(ticket_json(cfg, x.ticket, x.rank, x.messages, expected(x)) for chunk in chunks for x in chunk)
    return 0


def _positive(text: str) -> int:
    from maild.storage.queries import MAX_ROW_ID

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 1 <= value <= MAX_ROW_ID:  # a larger LIMIT overflowed in the database driver
        raise argparse.ArgumentTypeError(f"must be from 1 to {MAX_ROW_ID}, got {value}")
    return value


def _notify_event(dedupe_key: str) -> str:
    """The event a notification was for, from its dedupe key ``notify:<event>:...``."""
    parts = dedupe_key.split(":")
    return parts[1] if len(parts) > 1 and parts[0] == "notify" else ""


def cmd_tickets_show(cfg: Config, engine: Engine, args: argparse.Namespace) -> int:
    from sqlalchemy import select

    from maild.storage import queries
    from maild.storage.tables import attachments, events, ledger, messages, outbox

    with engine.connect() as conn:
        ticket = queries.find_ticket(conn, ticket_number(cfg, args.ref))
        if ticket is None:
            print(f"maild: no ticket {args.ref}", file=sys.stderr)
            return 1
        m, a, e, led, o = messages.c, attachments.c, events.c, ledger.c, outbox.c
        rows = list(conn.execute(select(messages).where(m.ticket_id == ticket.id).order_by(m.id)))
        atts = list(conn.execute(select(attachments).where(a.message_row_id.in_([r.id for r in rows]))))
        history = list(conn.execute(select(events).where(e.ticket_id == ticket.id).order_by(e.id)))
        booked = list(conn.execute(select(ledger).where(led.ticket_id == ticket.id).order_by(led.id)))
        told = list(conn.execute(select(outbox).where(o.ticket_id == ticket.id, o.kind.in_(queries.NOTIFY_KINDS))
                                 .order_by(o.id)))
        data = ticket_json(cfg, ticket, queries.queue_rank(conn, ticket), len(rows))
    by_message: dict[int, list[dict[str, Any]]] = {}
    for att in atts:
        by_message.setdefault(att.message_row_id, []).append(
            {"filename": att.filename, "content_type": att.content_type, "size": att.size, "sha256": att.sha256})
    data["messages"] = [
        {
            "message_id": r.message_id, "direction": r.direction, "role": r.role, "kind": r.kind,
            "from": r.from_addr, "from_name": r.from_name, "to": list(r.to_addrs), "cc": list(r.cc_addrs),
            "date": iso(r.date), "subject": r.subject, "internal": r.internal, "text": r.text_new,
            "notes": list(r.notes or []), "attachments": by_message.get(r.id, []),
        }
        for r in rows
    ]
    data["time_logged_minutes"] = sum(b.minutes for b in booked)
    data["time_entries"] = [
        {"id": b.id, "minutes": b.minutes, "by": b.by, "scope": b.scope, "booked_at": iso(b.booked_at),
         "contract_id": b.contract_id, "overage": b.overage, "reverses": b.reverses, "note": b.note}
        for b in booked
    ]
    data["notifications"] = [
        {"to": ", ".join(str(r) for r in n.recipients), "event": _notify_event(n.dedupe_key), "kind": n.kind,
         "message_id": n.message_id, "queued_at": iso(n.created_at), "sent_at": iso(n.sent_at), "status": n.status}
        for n in told
    ]
    data["delivery_failures"] = [
        {"at": iso(h.at), **h.detail} for h in history if h.kind == "delivery_failed"
    ]
    data["events"] = [{"at": iso(h.at), "kind": h.kind, "actor": h.actor, **h.detail} for h in history]
    if args.json:
        print_json(data)
        return 0
    tz = ZoneInfo(cfg.calendar.timezone)
    print(f"{data['ref']}  {data['subject']}")
    print(f"status {data['status']}, {data['tier']} {data['priority']}, customer {data['customer'] or '-'}"
          f" ({data['contract_kind']}{'' if data['verified'] else ', unverified'}), requester {data['requester']}"
          + (f", assigned to {data['assigned_to']}" if data["assigned_to"] else ""))
    if data["reasons"]:  # why its queue place (a consultant's #priority with the reason given), as stored
        print(f"reasons: {'; '.join(str(r) for r in data['reasons'])}")
    print(f"created {local(ticket.created_at, tz)}, reaction due {local(ticket.reaction_due, tz)}")
    print(f"first response {local(ticket.first_response_at, tz)}, time logged {data['time_logged_minutes']} min")
    for failure in data["delivery_failures"]:
        kind = "PERMANENT" if failure.get("permanent") else "temporary"
        print(f"! delivery failure ({kind}) to {', '.join(failure.get('recipients', []))}: {failure.get('status', '')}")
    for r, m in zip(rows, data["messages"]):
        arrow = "<-" if m["direction"] == "in" else "->"
        flag = " [internal]" if m["internal"] else ""
        print(f"\n{local(r.date, tz)} {arrow} {m['role']} {m['from']}{flag} ({m['kind']})")
        for line in (m["text"] or "").strip().splitlines():
            print(f"    {line}".rstrip())
        for a in m["attachments"]:
            print(f"    [attachment] {a['filename']} ({a['content_type']}, {a['size']} bytes)")
        for note in m["notes"]:
            print(f"    [note] {note}")
    return 0


def register(commands: Commands) -> None:
    tickets = commands.group("tickets", "the ticket queue")
    tl = commands.add_to(tickets, "list", cmd_tickets_list, help="tickets in queue order", needs="engine")
    tl.add_argument("--status", choices=["new", "open", "waiting", "resolved", "closed", "all"])
    tl.add_argument("--customer", metavar="ID", help="only this customer's tickets (its id in the customers file)")
    tl.add_argument("--assigned", metavar="EMAIL", help="only tickets assigned to this consultant; 'none': nobody's")
    tl.add_argument("--tier", choices=TIER_NAMES, help="only this queue tier")
    tl.add_argument("--overdue", action="store_true", help="only tickets past their reaction deadline, unanswered")
    tl.add_argument("--json", action="store_true")
    page = tl.add_mutually_exclusive_group()
    page.add_argument("--limit", type=_positive, metavar="N",
                      help=f"at most N tickets (text: {TEXT_LIMIT} unless --all; JSON: all unless --limit)")
    page.add_argument("--all", action="store_true", help="every ticket (text)")
    tl.add_argument("--after", metavar="REF", help="continue behind REF in queue order (the next page)")
    ts = commands.add_to(tickets, "show", cmd_tickets_show, help="one ticket with its thread", needs="engine")
    ts.add_argument("ref")
    ts.add_argument("--json", action="store_true")
