"""The consultant authority rule as a pure function: which proof counts, and when nothing else does."""
from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from maild.desk.authority import check_authority, consultant_token, token_address, token_in

SECRET = b"s" * 32
SUPPORT = "support@firma.pl"
IDS = st.lists(st.text(alphabet="abcdef0123456789.@", min_size=1, max_size=20), max_size=5)


def _check(configured: bool, passed: bool, refs: list[str], sent: set[str], recipients: list[str],
           email: str = "anna@firma.pl") -> bool:
    return check_authority(authserv_configured=configured, auth_passed=passed, auth_reason="r", references=refs,
                           sent_to_consultant=sent, recipients=recipients, support_address=SUPPORT,
                           token=consultant_token(SECRET, email)).granted


@given(passed=st.booleans(), refs=IDS, sent=IDS, use_token=st.booleans())
def test_our_server_decides_alone_when_configured(passed: bool, refs: list[str], sent: list[str],
                                                  use_token: bool) -> None:
    recipients = [token_address(SUPPORT, consultant_token(SECRET, "anna@firma.pl"))] if use_token else [SUPPORT]
    assert _check(True, passed, refs + sent, set(sent), recipients) is passed


@given(refs=IDS, sent=IDS, passed=st.booleans())
def test_without_our_server_a_reference_to_our_mail_to_that_consultant_counts(refs: list[str], sent: list[str],
                                                                              passed: bool) -> None:
    assert _check(False, passed, refs, set(sent), [SUPPORT]) is bool(set(refs) & set(sent))


def test_the_token_address_counts_only_for_its_own_consultant() -> None:
    anna = token_address(SUPPORT, consultant_token(SECRET, "anna@firma.pl"))
    assert _check(False, False, [], set(), [anna.upper()], "anna@firma.pl")
    assert not _check(False, False, [], set(), [anna], "piotr@firma.pl")
    assert not _check(False, False, [], set(), [SUPPORT, "support+SUP-1@firma.pl"])


@given(email=st.emails(), other=st.emails())
def test_tokens_are_stable_lowercase_and_personal(email: str, other: str) -> None:
    token = consultant_token(SECRET, email)
    assert token == consultant_token(SECRET, email.upper()) and token == token.lower()
    assert len(token) == 16 and token.isalnum()
    assert consultant_token(b"another secret", email) != token
    if email.lower() != other.lower():
        assert consultant_token(SECRET, other) != token


def test_token_in_needs_the_exact_address() -> None:
    token = consultant_token(SECRET, "anna@firma.pl")
    assert token_in([f"support+{token}@firma.pl"], SUPPORT, token)
    assert not token_in([f"support+{token}x@firma.pl", f"support+{token}@other.pl"], SUPPORT, token)


def test_the_verdict_names_its_proof_for_the_consultants_notice() -> None:
    """The notice words the verdict's code in the consultant's language; ``reason`` stays the English log line."""
    def verdict(configured: bool, passed: bool, refs: list[str], sent: set[str],
                recipients: list[str]) -> tuple[bool, str, str]:
        found = check_authority(authserv_configured=configured, auth_passed=passed, auth_reason="dkim=fail",
                                references=refs, sent_to_consultant=sent, recipients=recipients,
                                support_address=SUPPORT, token=consultant_token(SECRET, "anna@firma.pl"))
        return found.granted, found.code, found.detail
    anna = token_address(SUPPORT, consultant_token(SECRET, "anna@firma.pl"))
    assert verdict(True, False, ["<n1@x>"], {"<n1@x>"}, [anna]) == (False, "not_authenticated", "dkim=fail")
    assert verdict(True, True, [], set(), [SUPPORT]) == (True, "authenticated", "dkim=fail")
    assert verdict(False, False, ["<n1@x>"], {"<n1@x>"}, [SUPPORT]) == (True, "answers_our_mail", "<n1@x>")
    assert verdict(False, False, [], set(), [anna]) == (True, "personal_address", "")
    assert verdict(False, False, ["<other@x>"], {"<n1@x>"}, [SUPPORT]) == (False, "no_proof", "")
