"""Whether a mail from a consultant's address may act as that consultant.

A ``From:`` header is anyone's to write, so it buys nothing by itself. A mail
acts as a consultant's (commands applied, text relayed, ``#verify`` honoured)
only with one of these proofs:

* ``trusted_authserv_id`` is set and our own receiving server's
  Authentication-Results say DKIM (aligned with the From domain) or SPF passed.
  When it is set and that check does not pass, nothing else counts: a stolen
  reference or token must not outvote our own server.
* it answers a mail that maild sent to that very consultant (a notification,
  escalation, digest, error or notice): its In-Reply-To/References carry one
  of those Message-IDs, which are random and were only ever sent to that
  consultant (the customer's mail and the acknowledgement, which the customer
  saw, are not in that set);
* it is addressed to the consultant's personal token address
  ``support+<token>@domain``, which only that consultant's mail shows.

Pure: the caller gives the facts (the authentication verdict already
computed, the Message-IDs sent to the consultant) and gets a verdict with the
reason for the record.
"""
from __future__ import annotations

import hashlib
import hmac
import base64
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Literal

__all__ = ["Authority", "AuthorityCode", "consultant_token", "token_address", "token_in", "check_authority", "TOKEN_SECRET_KEY"]

# the key of the state row holding the secret the tokens are derived from
TOKEN_SECRET_KEY = "consultant_token_secret"
_TOKEN_CHARS = 16  # base32, 80 bits


# Which proof decided: the consultant's notice words it in their language (templates/*/authority_notice.txt),
# ``reason`` keeps the English line for the log, the event and the intake row.
AuthorityCode = Literal["authenticated", "not_authenticated", "answers_our_mail", "personal_address", "no_proof"]


@dataclass(frozen=True)
class Authority:
    granted: bool
    reason: str
    code: AuthorityCode
    detail: str = ""  # our server's verdict (the Authentication-Results summary), or the Message-ID answered


def consultant_token(secret: bytes, email: str) -> str:
    """The consultant's personal token: an HMAC of their address under a secret kept
    in storage, so it is stable (printed in every mail) yet unguessable, and a new
    secret revokes every token at once. Lower-case letters and digits only: it
    must survive a mail client's case folding of the local part."""
    digest = hmac.new(secret, email.strip().lower().encode("utf-8"), hashlib.sha256).digest()
    return base64.b32encode(digest).decode("ascii")[:_TOKEN_CHARS].lower()


def token_address(support_address: str, token: str) -> str:
    local, _, domain = support_address.partition("@")
    return f"{local}+{token}@{domain}"


def token_in(addresses: Iterable[str], support_address: str, token: str) -> bool:
    """Whether ``support+<token>@domain`` is among the recipients (case-insensitive)."""
    wanted = token_address(support_address, token).lower()
    return any(hmac.compare_digest(a.strip().lower().encode("utf-8"), wanted.encode("utf-8")) for a in addresses)


def check_authority(*, authserv_configured: bool, auth_passed: bool, auth_reason: str,
                    references: Iterable[str], sent_to_consultant: Collection[str],
                    recipients: Iterable[str], support_address: str, token: str) -> Authority:
    """The verdict for one mail whose From is a consultant's address.

    ``auth_passed``/``auth_reason``: our server's DKIM/SPF verdict on the From
    domain (meaningful only when ``authserv_configured``); ``references``: the
    mail's In-Reply-To and References; ``sent_to_consultant``: Message-IDs of
    maild's mail to this consultant among those references (or a superset);
    ``token``: this consultant's token.
    """
    if authserv_configured:
        if auth_passed:
            return Authority(True, f"authenticated by our server: {auth_reason}", "authenticated", auth_reason)
        return Authority(False, f"not authenticated by our server ({auth_reason}); nothing else counts",
                         "not_authenticated", auth_reason)
    for ref in references:
        if ref and ref in sent_to_consultant:
            return Authority(True, f"answers maild's mail <{ref}> to this consultant", "answers_our_mail", ref)
    if token and token_in(recipients, support_address, token):
        return Authority(True, "sent to the consultant's personal address", "personal_address")
    return Authority(False, "no proof: neither a reply to maild's mail to this consultant "
                            "nor the consultant's personal address", "no_proof")
