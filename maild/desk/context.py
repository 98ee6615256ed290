"""What the desk needs to know beyond the database, built once per config/customers load.

The intake runner's ``Context`` extends it with the screening and threading
settings; everything below intake (the desk, the sweeper, the CLI's bookings)
gets only this, so nothing below intake depends on intake's types.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

from maild.config import Config, Consultant
from maild.errors import ConfigError
from maild.rules.calendar import BusinessCalendar, CalendarError
from maild.rules.contracts import CustomerIndex
from maild.rules.customers import Contract, Customer
from maild.rules.peak import DaysOff, days_off_kept_by
from maild.storage.holiday_file import HolidayFile, holidays_file
from maild.storage.queries import ticket_ref


def business_calendar(config: Config, write: bool = True) -> BusinessCalendar:
    """The configured calendar, its holidays kept under the storage folder (``storage.holiday_file``;
    ``write=False``: only read there). Raises ConfigError when the holiday settings name no country,
    region or language the ``holidays`` library knows (loading the config checks the rest)."""
    try:
        return BusinessCalendar(config.calendar, HolidayFile(holidays_file(config.storage_path), write=write))
    except CalendarError as exc:
        key, _, reason = str(exc).partition(": ")
        raise ConfigError(str(config.path), key, reason) from None


@dataclass
class DeskContext:
    config: Config
    calendar: BusinessCalendar
    customers: tuple[Customer, ...]
    index: CustomerIndex

    @classmethod
    def for_config(cls, config: Config, customers: Sequence[Customer]) -> DeskContext:
        """Raises ConfigError as ``business_calendar`` does."""
        return cls(config=config, calendar=business_calendar(config), customers=tuple(customers),
                   index=CustomerIndex(customers))

    @property
    def domain(self) -> str:
        return self.config.support.address.rsplit("@", 1)[1]

    @cached_property
    def days_off(self) -> DaysOff:
        """The statutory days off that move the peak windows' deadlines, from the calendar's kept holidays
        (``peak.days_off_kept_by``): asked of the library in every process, they made each daemon start's
        first new ticket load it (~0.05 s) when the calendar had read every holiday from the kept file."""
        return days_off_kept_by(self.calendar)

    @cached_property
    def support_addresses(self) -> frozenset[str]:
        """Our own addresses: never a participant, never a recipient of a relay."""
        return frozenset({self.config.support.address, self.config.from_address})

    def ref(self, ticket_id: int) -> str:
        return ticket_ref(self.config.support.ticket_prefix, ticket_id)

    @cached_property
    def _contracts(self) -> dict[str, Contract]:
        return {contract.id: contract for customer in self.customers for contract in customer.contracts}

    @cached_property
    def _customers(self) -> dict[str, Customer]:
        return {customer.id: customer for customer in self.customers}

    def contract(self, contract_id: str | None) -> Contract | None:
        return None if contract_id is None else self._contracts.get(contract_id)

    def customer(self, customer_id: str | None) -> Customer | None:
        return None if customer_id is None else self._customers.get(customer_id)

    def consultant(self, email: str) -> Consultant | None:
        return next((c for c in self.config.consultants if c.email == email), None)

    def find_consultant(self, who: str) -> str | None:
        """The address of the consultant ``who`` names (case-insensitive): by address or whole name, else by the
        first name or the address's local part when only one consultant has it ("#assign Bob", as the Polish
        help's "e-mail lub imię", e-mail or first name, invites); None when nobody or several do."""
        wanted = who.strip().casefold()
        for c in self.config.consultants:
            if wanted in (c.email.casefold(), c.name.casefold()):
                return c.email
        named = {c.email for c in self.config.consultants
                 if wanted in ((c.name.split() or [""])[0].casefold(), c.email.partition("@")[0].casefold())}
        return named.pop() if len(named) == 1 else None
