"""Mail sources: an IMAP folder or a local Maildir, as plain data.

This is the only module that talks IMAP (and the only one importing imapclient).
A source fetches what is waiting and moves what the pipeline has finished with; it
keeps no record of what was processed, because that record must live in the same
database transaction as the ticket (guarantee 1: a message is moved only after the
transaction that stored it committed). The source therefore never touches \\Seen:
a human reading the support mailbox in a MUA must not hide mail from maild.

Every IMAP round trip is planned: one UID SEARCH, one FETCH of sizes per thousand
messages, then one FETCH per batch and one MOVE per batch. A backlog of 10,000
messages costs about thirty round trips, not tens of thousands.
"""
from __future__ import annotations

import contextlib
import glob
import imaplib
import ipaddress
import logging
import os
import re
import ssl
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

from maild.config import ImapSettings as ImapSettings
from maild.config import MaildirSettings as MaildirSettings
from maild.errors import MaildError

log = logging.getLogger("maild.imap")
SIZE_CHUNK = 1000
maildir_log = logging.getLogger("maild.maildir")


# ---------------------------------------------------------------- settings and values


@dataclass(frozen=True)
class FetchedMail:
    """One message as the source holds it.

    `source_key` is what the store keys processing on; it changes when the IMAP
    folder's UIDVALIDITY changes, which is why the pipeline also dedupes on
    Message-ID. `arrived_at` is when the mailbox received the mail (INTERNALDATE,
    Maildir delivery time), never the sender-controlled Date header: SLA clocks
    start from it.
    """

    source_key: str
    raw: bytes
    arrived_at: datetime
    size: int
    uid: int | None = None
    uidvalidity: int | None = None


# ---------------------------------------------------------------- errors


class MailboxError(MaildError):
    """The mailbox could not do what was asked; names server, folder and operation."""

    def __init__(self, message: str, *, host: str = "", folder: str = "", operation: str = "") -> None:
        super().__init__(message)
        self.host = host
        self.folder = folder
        self.operation = operation


class MailboxUnavailable(MailboxError):
    """Connection refused, lost or timed out: transient, reconnect with backoff."""


class MailboxAuthError(MailboxError):
    """Login refused: a config problem that retrying quickly cannot fix."""


class MailboxSecurityError(MailboxAuthError):
    """TLS could not be set up as configured (no STARTTLS, untrusted certificate).

    A subclass of the auth error because the remedy is the same: fix the config,
    do not hammer the server.
    """


# ---------------------------------------------------------------- the protocol


class MailSource(Protocol):
    def connect(self) -> None: ...

    def batches(self, max_count: int = 500, max_bytes: int = 32 * 1024 * 1024,
                max_message_bytes: int | None = None, first_count: int | None = None) -> Iterator[list[FetchedMail]]:
        """The waiting mail in batches bounded by count and bytes. Of a mail bigger than
        ``max_message_bytes`` only that much is read (its ``size`` says how big it is).
        ``first_count``: the first batches grow from that many (``plan_batches``)."""
        ...

    def mark_done(self, mails: Sequence[FetchedMail]) -> None: ...

    def quarantine(self, mails: Sequence[FetchedMail]) -> None: ...

    def wait_for_mail(self, timeout: float) -> bool: ...

    def capabilities(self) -> dict[str, bool]: ...

    def close(self) -> None: ...


def plan_batches(sizes: Sequence[tuple[int, int]], max_count: int, max_bytes: int,
                 first_count: int | None = None) -> list[list[int]]:
    """Split (id, size) pairs, in order, into batches bounded by count and total bytes.

    A message larger than max_bytes alone still forms a batch: refusing it would
    leave it in the folder forever. ``first_count``: the first batch holds at most
    that many, each next one twice as many as the one before, up to ``max_count``;
    and the plan ends the same way backwards: the last batch is cut into pieces of
    at most ``first_count``, twice that, ... before it. The daemon parses batch k+1
    in its worker while it stores batch k, so the worker waits for the first batch's
    fetch and the daemon stores the last batch alone: a short first and last batch
    keep both cores busy for more of the reading (a 2,000-mail backlog's last batch
    of 178 mails took 0.1 s of the daemon's with the worker idle).
    """
    if max_count < 1 or max_bytes < 1 or (first_count is not None and first_count < 1):
        raise ValueError("max_count, max_bytes and first_count must be positive")
    batches: list[list[int]] = []
    current: list[int] = []
    total = 0
    cap = max_count if first_count is None else min(first_count, max_count)
    for ident, size in sizes:
        if current and (len(current) >= cap or total + size > max_bytes):
            batches.append(current)
            current, total = [], 0
            cap = min(cap * 2, max_count)
        current.append(ident)
        total += size
    if current:
        batches.append(current)
    if first_count is not None and len(batches) > 1:
        batches[-1:] = _tapered(batches[-1], first_count)
    return batches


def _tapered(batch: list[int], smallest: int) -> list[list[int]]:
    """``batch`` cut from its end into pieces of ``smallest``, twice that, ... while what is left
    is more than twice the next piece; what is left leads."""
    pieces: list[list[int]] = []
    size = smallest
    while len(batch) > 2 * size:
        pieces.insert(0, batch[-size:])
        batch = batch[:-size]
        size *= 2
    return [batch, *pieces]


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _as_utc(value: Any) -> datetime:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)
    raise ValueError(f"unexpected INTERNALDATE {value!r}")


# ---------------------------------------------------------------- IMAP


class ImapSource:
    """An IMAP folder as a mail source.

    `use_move=False` ignores the server's MOVE capability so the COPY + EXPUNGE
    path (servers without RFC 6851) can be exercised against a server that has it.
    """

    # Mail the running batches() pass has found in the folder (yielded or still to
    # come): what a progress display counts down from.
    found = 0

    def __init__(self, settings: ImapSettings, *, use_move: bool = True) -> None:
        self.settings = settings
        self._use_move = use_move
        self._client: Any = None
        self._caps: frozenset[bytes] = frozenset()
        self._uidvalidity: int | None = None

    # -- plumbing

    @property
    def _where(self) -> str:
        return f"{self.settings.host}:{self.settings.port}"

    def _error(self, cls: type[MailboxError], operation: str, detail: object) -> MailboxError:
        text = str(detail) or type(detail).__name__
        if self.settings.password:
            text = text.replace(self.settings.password, "***")
        return cls(
            f"IMAP {operation} on {self._where} (user {self.settings.username}, "
            f"folder {self.settings.folder}): {text}",
            host=self._where,
            folder=self.settings.folder,
            operation=operation,
        )

    @contextlib.contextmanager
    def _guard(self, operation: str) -> Iterator[None]:
        """Translate library and socket failures into the three outcomes the daemon acts on."""
        from imapclient.exceptions import LoginError  # loaded with the first IMAP source, not by a Maildir's

        try:
            yield
        except MailboxError:
            raise
        except LoginError as exc:
            self._drop()
            raise self._error(MailboxAuthError, operation, exc) from None
        except ssl.SSLCertVerificationError as exc:
            self._drop()
            raise self._error(MailboxSecurityError, operation, exc) from None
        except (imaplib.IMAP4.abort, OSError, EOFError) as exc:
            self._drop()
            raise self._error(MailboxUnavailable, operation, exc) from None
        except imaplib.IMAP4.error as exc:
            raise self._error(MailboxError, operation, exc) from None

    def _drop(self) -> None:
        """Forget a connection without a polite LOGOUT: it may be dead or mid-IDLE."""
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                client.shutdown()

    def _context(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        if self.settings.cafile:
            context.load_verify_locations(cafile=self.settings.cafile)
        return context

    def _connected(self) -> Any:
        if self._client is None:
            self.connect()
        return self._client

    # -- MailSource

    def connect(self) -> None:
        if self._client is not None:
            return
        try:
            self._open()
        except BaseException:
            # half-open (say, logged in but the folder is missing) must not pass for connected
            self._drop()
            raise

    def _open(self) -> None:
        s = self.settings
        if s.security == "none" and not _is_loopback(s.host):
            log.warning("IMAP %s: security = none, the password crosses the network in clear", self._where)
        from imapclient import IMAPClient

        with self._guard("connect"):
            client = IMAPClient(
                s.host, s.port, ssl=s.security == "tls",
                ssl_context=self._context() if s.security == "tls" else None,
                timeout=s.timeout_seconds,
            )
            self._client = client
            # aware datetimes, so INTERNALDATE converts to UTC without guessing the local zone
            client.normalise_times = False
            if s.security == "starttls":
                if b"STARTTLS" not in {c.upper() for c in client.capabilities()}:
                    raise self._error(MailboxSecurityError, "starttls",
                                      "server does not offer STARTTLS and security = starttls")
        if s.security == "starttls":
            with self._guard("starttls"):
                client.starttls(self._context())
        with self._guard("login"):
            client.login(s.username, s.password)
            log.info("IMAP %s: logged in as %s (%s)", self._where, s.username, s.security)
            self._caps = frozenset(c.upper() for c in client.capabilities())
        with self._guard("select"):
            for folder in (s.done_folder, s.quarantine_folder):
                if not client.folder_exists(folder):
                    client.create_folder(folder)
                    log.info("IMAP %s: created folder %s", self._where, folder)
            self._select()

    def _select(self) -> int:
        status = self._client.select_folder(self.settings.folder)
        self._uidvalidity = int(status[b"UIDVALIDITY"])
        return int(status.get(b"EXISTS", 0))

    def capabilities(self) -> dict[str, bool]:
        self._connected()
        return {
            "idle": b"IDLE" in self._caps,
            "move": b"MOVE" in self._caps,
            "uidplus": b"UIDPLUS" in self._caps,
        }

    def batches(self, max_count: int = 500, max_bytes: int = 32 * 1024 * 1024,
                max_message_bytes: int | None = None, first_count: int | None = None) -> Iterator[list[FetchedMail]]:
        self._connected()
        yielded: set[tuple[int, int]] = set()
        with self._guard("select"):
            exists = self._select()
        if exists == 0:
            return
        while True:
            with self._guard("search"):
                uidvalidity = self._uidvalidity
                assert uidvalidity is not None
                uids = sorted(int(u) for u in self._connected().search("ALL"))
            pending = self._sizes([u for u in uids if (uidvalidity, u) not in yielded])
            self.found = len(yielded) + len(pending)
            if not pending:
                return
            sizes = dict(pending)
            cap = max_message_bytes or max(sizes.values())
            plan = plan_batches([(uid, min(size, cap)) for uid, size in pending], max_count, max_bytes, first_count)
            first_count = None  # mail that came in meanwhile: in full batches
            for batch_uids in plan:
                yielded.update((uidvalidity, uid) for uid in batch_uids)
                oversize = {uid: sizes[uid] for uid in batch_uids if sizes[uid] > cap}
                batch = self._fetch(batch_uids, uidvalidity, oversize, cap)
                if batch:
                    yield batch

    def _sizes(self, uids: list[int]) -> list[tuple[int, int]]:
        """(uid, RFC822.SIZE) in UID order, in FETCHes of SIZE_CHUNK UIDs.

        imapclient takes message sets only as UID lists, so a chunk keeps each
        command line near the 8 KiB RFC 7162 advises clients to stay under.
        """
        sizes: list[tuple[int, int]] = []
        for start in range(0, len(uids), SIZE_CHUNK):
            with self._guard("fetch sizes"):
                data = self._connected().fetch(uids[start:start + SIZE_CHUNK], ["RFC822.SIZE"])
            sizes.extend((int(uid), int(item[b"RFC822.SIZE"]))
                         for uid, item in data.items() if b"RFC822.SIZE" in item)
        return sorted(sizes)

    def _fetch(self, uids: list[int], uidvalidity: int, oversize: dict[int, int] | None = None,
               cap: int = 0) -> list[FetchedMail]:
        """Fetch a batch; of an ``oversize`` mail (uid -> RFC822.SIZE) only the first ``cap`` bytes."""
        oversize = oversize or {}
        whole = [uid for uid in uids if uid not in oversize]
        data: dict[int, Any] = {}
        with self._guard("fetch"):
            if whole:
                data.update(self._connected().fetch(whole, ["BODY.PEEK[]", "INTERNALDATE"]))
            if oversize:
                partial = self._connected().fetch(sorted(oversize), [f"BODY.PEEK[]<0.{cap}>", "INTERNALDATE"])
                for uid, item in partial.items():
                    body = next((v for k, v in item.items() if k.startswith(b"BODY[]")), None)
                    if int(uid) in oversize and body is not None:
                        data[int(uid)] = {b"BODY[]": body, b"INTERNALDATE": item[b"INTERNALDATE"]}
        wanted = set(uids)
        mails: list[FetchedMail] = []
        for uid in sorted(int(u) for u in data):
            item = data[uid]
            # unsolicited FETCH responses (flag changes by other clients) carry no body
            if uid not in wanted or b"BODY[]" not in item:
                continue
            raw = bytes(item[b"BODY[]"])
            if uid in oversize:
                log.warning("IMAP %s: UID %d is %d bytes, over max_message_mb: fetched its first %d",
                            self._where, uid, oversize[uid], len(raw))
            mails.append(FetchedMail(
                source_key=f"imap:{uidvalidity}:{uid}",
                raw=raw,
                arrived_at=_as_utc(item[b"INTERNALDATE"]),
                size=max(len(raw), oversize.get(uid, 0)),
                uid=uid,
                uidvalidity=uidvalidity,
            ))
        log.info("IMAP %s: fetched batch of %d messages, %d bytes from %s",
                 self._where, len(mails), sum(m.size for m in mails), self.settings.folder)
        return mails

    def mark_done(self, mails: Sequence[FetchedMail]) -> None:
        self._move(mails, self.settings.done_folder)

    def quarantine(self, mails: Sequence[FetchedMail]) -> None:
        self._move(mails, self.settings.quarantine_folder)

    def _move(self, mails: Sequence[FetchedMail], target: str) -> None:
        if not mails:
            return
        client = self._connected()
        current = [m for m in mails if m.uid is not None and m.uidvalidity == self._uidvalidity]
        stale = len(mails) - len(current)
        if stale:
            # Old UIDs may now name other messages; moving them could move the wrong mail.
            # The mail stays and comes back under new keys, where the store dedupes it.
            log.warning("IMAP %s: not moving %d messages to %s: UIDVALIDITY of %s changed",
                        self._where, stale, target, self.settings.folder)
        if not current:
            return
        uids = sorted({m.uid for m in current if m.uid is not None})
        with self._guard(f"move to {target}"):
            if self._use_move and b"MOVE" in self._caps:
                client.move(uids, target)
            else:
                client.copy(uids, target)
                client.add_flags(uids, [b"\\Deleted"], silent=True)
                if b"UIDPLUS" in self._caps:
                    client.uid_expunge(uids)
                else:
                    log.warning("IMAP %s: no UIDPLUS; plain EXPUNGE also removes other clients' "
                                "\\Deleted mail in %s", self._where, self.settings.folder)
                    client.expunge()
        log.info("IMAP %s: moved %d messages to %s", self._where, len(current), target)

    def wait_for_mail(self, timeout: float) -> bool:
        client = self._connected()
        s = self.settings
        if not (s.idle and b"IDLE" in self._caps):
            with self._guard("noop"):
                client.noop()
            time.sleep(max(0.0, min(timeout, s.poll_seconds)))
            return True
        deadline = time.monotonic() + timeout
        with self._guard("noop"):
            # mail that arrived since the last fetch is reported here, not by IDLE
            _text, pending = client.noop()
        if _new_mail(pending):
            return True
        while True:
            now = time.monotonic()
            if now >= deadline:
                return False
            renew_at = min(deadline, now + s.idle_renew_seconds)
            try:
                with self._guard("idle"):
                    client.idle()
                    arrived = self._idle_until(client, renew_at)
                    # DONE needs a tagged answer within timeout_seconds: the liveness check
                    _text, responses = client.idle_done()
            except BaseException:
                # mid-IDLE the connection accepts no other command; a signal or error leaves it unusable
                self._drop()
                raise
            if arrived or _new_mail(responses):
                return True

    def _idle_until(self, client: Any, until: float) -> bool:
        while True:
            remaining = until - time.monotonic()
            if remaining <= 0:
                return False
            started = time.monotonic()
            responses = client.idle_check(timeout=remaining)
            if any(r and r[0] == b"BYE" for r in responses):
                raise self._error(MailboxUnavailable, "idle", "server said BYE")
            if _new_mail(responses):
                return True
            if not responses and time.monotonic() - started < remaining - 0.05:
                # imapclient returns early and empty on EOF; idle_done() will tell if the peer is gone
                return False

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                client.logout()
            log.info("IMAP %s: logged out", self._where)


def _new_mail(responses: Sequence[Any]) -> bool:
    return any(len(r) >= 2 and r[1] in (b"EXISTS", b"RECENT") for r in responses)


# ---------------------------------------------------------------- Maildir


_UNIQUE_TIME = re.compile(r"^(\d{9,11})\.")
_UNIQUE_USEC = re.compile(r"M(\d{1,6})")


def maildir_arrival(name: str, mtime: float) -> datetime:
    """Delivery time from a Maildir unique name ("1700000000.M123456P7.host"), else mtime.

    The name is written by the delivering agent at delivery; mtime changes when a
    MUA rewrites or copies the file, so it is only the fallback.
    """
    unique = name.split(":", 1)[0]
    match = _UNIQUE_TIME.match(unique)
    if match:
        seconds = int(match.group(1))
        parts = unique.split(".")
        usec_match = _UNIQUE_USEC.search(parts[1]) if len(parts) > 1 else None
        micro = int(usec_match.group(1)) if usec_match else 0
        try:
            return datetime.fromtimestamp(seconds, timezone.utc).replace(microsecond=micro)
        except (OverflowError, OSError, ValueError):
            pass
    return datetime.fromtimestamp(mtime, timezone.utc)


def _make_maildir(folder: Path, subfolder: bool) -> None:
    """A Maildir's tmp/new/cur where missing; a Maildir++ subfolder is marked as one."""
    for part in ("tmp", "new", "cur"):
        (folder / part).mkdir(parents=True, exist_ok=True)
    if subfolder:
        (folder / "maildirfolder").touch(exist_ok=True)


class MaildirSource:
    """A local Maildir (new/ and cur/) with Maildir++ subfolders for done and quarantine.

    Done mail goes to one subfolder per month of its arrival (``.Processed.2026-12``, shown by
    a mail client as Processed/2026-12): a rename into a directory, and the existence check
    before it, slow down as the directory grows (a stat took 30 against 4 µs with 272,000
    files, bench/README.md "Ingest at 1M, tenth session"), and one folder for every mail ever
    read grows for as long as maild runs. Nothing reads these folders back: what was stored
    is known from the database, so the layout changes no restart, dedupe or retry.
    """

    found = 0  # as ImapSource.found

    def __init__(self, settings: MaildirSettings) -> None:
        self.settings = settings
        self.root = Path(settings.path)
        # where each mail yielded was read (a path as a string: ``_move`` joins and renames thousands a batch)
        self._paths: dict[str, str] = {}

    def _folder(self, name: str) -> Path:
        return self.root / f".{name}"

    def connect(self) -> None:
        folders = [(self.root, False)] + [
            (self._folder(n), True) for n in (self.settings.done_folder, self.settings.quarantine_folder)
        ]
        try:
            for folder, sub in folders:
                _make_maildir(folder, sub)
        except OSError as exc:
            raise MailboxUnavailable(f"Maildir {self.root}: cannot create folders: {exc}",
                                     host=str(self.root), folder=str(self.root), operation="connect") from None

    def capabilities(self) -> dict[str, bool]:
        return {"idle": False, "move": True, "uidplus": False}

    def _scan(self) -> list[tuple[datetime, str, str, int]]:
        found: list[tuple[datetime, str, str, int]] = []
        for part in ("new", "cur"):
            try:
                entries = list(os.scandir(self.root / part))
            except OSError as exc:
                raise MailboxUnavailable(f"Maildir {self.root}: cannot list {part}/: {exc}",
                                         host=str(self.root), folder=str(self.root), operation="scan") from None
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                try:
                    st = entry.stat()
                except FileNotFoundError:  # moved away by another reader
                    continue
                if not entry.is_file():
                    continue
                unique = entry.name.split(":", 1)[0]
                found.append((maildir_arrival(entry.name, st.st_mtime), unique, entry.path, st.st_size))
        found.sort(key=lambda f: (f[0], f[1]))
        return found

    def batches(self, max_count: int = 500, max_bytes: int = 32 * 1024 * 1024,
                max_message_bytes: int | None = None, first_count: int | None = None) -> Iterator[list[FetchedMail]]:
        self.connect()
        yielded: set[str] = set()
        while True:
            pending = [f for f in self._scan() if f[1] not in yielded]
            self.found = len(yielded) + len(pending)
            if not pending:
                return
            by_index = dict(enumerate(pending))
            cap = max_message_bytes or max(f[3] for f in pending)
            plan = plan_batches([(i, min(f[3], cap)) for i, f in by_index.items()], max_count, max_bytes, first_count)
            first_count = None  # mail that came in meanwhile: in full batches
            for indexes in plan:
                batch: list[FetchedMail] = []
                for i in indexes:
                    arrived, unique, path, _size = by_index[i]
                    yielded.add(unique)
                    try:
                        with open(path, "rb") as file:
                            raw = file.read(cap) if max_message_bytes else file.read()
                            size = max(len(raw), os.fstat(file.fileno()).st_size)
                    except FileNotFoundError:
                        continue
                    self._paths[unique] = path
                    batch.append(FetchedMail(f"maildir:{unique}", raw, arrived, size))
                maildir_log.info("Maildir %s: fetched batch of %d messages, %d bytes",
                                 self.root, len(batch), sum(m.size for m in batch))
                if batch:
                    yield batch

    def _locate(self, unique: str) -> str | None:
        """Where the message is now, searched for: a MUA may have moved it new/ -> cur/ or renamed its flags."""
        for part in ("new", "cur"):
            for path in (self.root / part).glob(f"{glob.escape(unique)}*"):
                if path.name.split(":", 1)[0] == unique:
                    return str(path)
        return None

    def _subfolder(self, name: str) -> Path:
        """The ``cur`` of a Maildir++ subfolder, made when missing (a new month's)."""
        folder = self._folder(name)
        try:
            _make_maildir(folder, subfolder=True)
        except OSError as exc:
            raise MailboxUnavailable(f"Maildir {self.root}: cannot create folder {name}: {exc}",
                                     host=str(self.root), folder=name, operation="move") from None
        return folder / "cur"

    def _move(self, mails: Sequence[FetchedMail], target: str, by_month: bool = False) -> None:
        """Each mail renamed into the target's ``cur``, from where it was read, else (a MUA moved it
        meanwhile, or it was read by an earlier source) from where it is found now (``_locate``).

        Paths are strings and the place a mail was read is not checked before its rename (the rename
        fails when it is gone, and only then is it searched for): pathlib's joins and that stat were
        2.9 % of the main process's instructions while it read a 2,000-mail backlog from a Maildir
        (callgrind; the rename itself is the kernel's; bench/README, sixteenth session)."""
        moved = 0
        folders: dict[str, str] = {}
        for mail in mails:
            name = f"{target}.{mail.arrived_at.astimezone(timezone.utc):%Y-%m}" if by_month else target
            dest_dir = folders.get(name)
            if dest_dir is None:
                dest_dir = folders[name] = str(self._subfolder(name) if by_month else self._folder(name) / "cur")
            if not mail.source_key.startswith("maildir:"):
                raise ValueError(f"{mail.source_key} is not a Maildir message")
            unique = mail.source_key[len("maildir:"):]
            known = self._paths.get(unique)
            if known is None or not self._rename_into(known, dest_dir, unique, name):
                path = self._locate(unique)
                if path is None:
                    maildir_log.warning("Maildir %s: %s already gone, not moved to %s", self.root, unique, target)
                    continue
                if not self._rename_into(path, dest_dir, unique, name):  # taken by another reader meanwhile
                    continue
            self._paths.pop(unique, None)
            moved += 1
        maildir_log.info("Maildir %s: moved %d messages to %s", self.root, moved, ", ".join(sorted(folders)) or target)

    def _rename_into(self, path: str, dest_dir: str, unique: str, folder: str) -> bool:
        """Rename the mail at ``path`` into ``dest_dir`` (its flags kept, a name taken there made unique);
        False when nothing is at ``path``."""
        file_name = os.path.basename(path)
        if ":" not in file_name:
            file_name += ":2,"
        dest = os.path.join(dest_dir, file_name)
        if os.path.exists(dest):  # rename would silently replace it
            dest = os.path.join(dest_dir, f"{unique}.dup{time.time_ns()}:{file_name.split(':', 1)[1]}")
        try:
            os.rename(path, dest)
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise MailboxUnavailable(f"Maildir {self.root}: cannot move {unique} to {folder}: {exc}",
                                     host=str(self.root), folder=folder, operation="move") from None
        return True

    def mark_done(self, mails: Sequence[FetchedMail]) -> None:
        self._move(mails, self.settings.done_folder, by_month=True)

    def quarantine(self, mails: Sequence[FetchedMail]) -> None:
        self._move(mails, self.settings.quarantine_folder)

    def wait_for_mail(self, timeout: float) -> bool:
        time.sleep(max(0.0, min(timeout, self.settings.poll_seconds)))
        return True

    def close(self) -> None:
        self._paths.clear()


def open_source(settings: ImapSettings | MaildirSettings) -> MailSource:
    if isinstance(settings, ImapSettings):
        return ImapSource(settings)
    return MaildirSource(settings)
