"""Every error maild raises on purpose is a MaildError, so one clause catches them all."""
from __future__ import annotations

import importlib
import inspect
import pkgutil

import maild
from maild.errors import MaildError

# Control flow inside one module, never seen outside it: a message's outcome in
# the pipeline, a consultant command line the parser refuses (becomes a CommandError).
NOT_ERRORS = {"maild.intake.pipeline": {"Outcome", "Discard", "Quarantine", "Duplicate"},
              "maild.desk.commands": {"Malformed"}}


def test_every_public_exception_is_a_maild_error() -> None:
    stray = []
    for info in pkgutil.walk_packages(maild.__path__, "maild."):
        if ".migrations" in info.name or info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        for name, cls in inspect.getmembers(module, inspect.isclass):
            if (cls.__module__ == info.name and issubclass(cls, BaseException) and not name.startswith("_")
                    and name not in NOT_ERRORS.get(info.name, set()) and not issubclass(cls, MaildError)):
                stray.append(f"{info.name}.{name}")
    assert stray == []


def test_the_former_value_errors_are_maild_errors_and_still_value_errors() -> None:
    from maild.billing.ledger import LedgerError
    from maild.billing.reports import ReportError
    from maild.rules.contracts import DuplicateClaim

    for cls in (LedgerError, ReportError, DuplicateClaim):
        assert issubclass(cls, MaildError) and issubclass(cls, ValueError)
