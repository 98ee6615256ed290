"""Reading one TOML table strictly: the customers file loader and the kind table share it."""
from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from maild.errors import ConfigError


class TableReader:
    """Typed access to one TOML table that remembers which file and key path it is.

    Every refusal is a ``ConfigError`` naming the file, the key path and the
    reason, so a typo in the customers file stops the daemon with a sentence an
    operator can act on instead of quietly changing a promise.
    """

    def __init__(self, source: str, path: str, table: Mapping[str, Any]) -> None:
        self.source = source
        self.path = path
        self.table = table

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def fail(self, name: str, reason: str) -> ConfigError:
        return ConfigError(self.source, self.key(name) if name else self.path, reason)

    def reject_unknown(self, allowed: frozenset[str]) -> None:
        for name in self.table:
            if name not in allowed:
                hint = ", ".join(sorted(allowed))
                raise self.fail(name, f"unknown key (allowed here: {hint})")

    def has(self, name: str) -> bool:
        return name in self.table

    def string(self, name: str, default: str | None = None) -> str:
        if name not in self.table:
            if default is None:
                raise self.fail(name, "missing required key")
            return default
        value = self.table[name]
        if not isinstance(value, str):
            raise self.fail(name, f"must be a string, not {type_name(value)}")
        if not value.strip():
            raise self.fail(name, "must not be empty")
        return value.strip()

    def boolean(self, name: str, default: bool) -> bool:
        value = self.table.get(name, default)
        if not isinstance(value, bool):
            raise self.fail(name, f"must be true or false, not {type_name(value)}")
        return value

    def integer(self, name: str, minimum: int) -> int | None:
        if name not in self.table:
            return None
        value = self.table[name]
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(name, f"must be a whole number, not {type_name(value)}")
        if value < minimum:
            raise self.fail(name, f"must be at least {minimum}, got {value}")
        return value

    def day(self, name: str) -> date | None:
        if name not in self.table:
            return None
        value = self.table[name]
        if isinstance(value, datetime) or not isinstance(value, date):
            raise self.fail(name, f"must be a TOML date like 2026-01-31, not {type_name(value)}")
        return value

    def scaled(self, name: str, scale: int, unit: str) -> int | None:
        """A non-negative TOML number times ``scale``, exactly, as an int.

        Floats are read through their shortest decimal text, so ``250.50`` is
        exactly 25050 grosze; anything finer than one ``unit`` is refused instead
        of being rounded behind the operator's back.
        """
        if name not in self.table:
            return None
        value = self.table[name]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.fail(name, f"must be a number, not {type_name(value)}")
        try:
            exact = Decimal(str(value))
        except InvalidOperation:  # pragma: no cover - str() of a TOML number always parses
            raise self.fail(name, f"not a number: {value!r}") from None
        if not exact.is_finite():
            raise self.fail(name, f"must be a finite number, got {value!r}")
        if exact < 0:
            raise self.fail(name, f"must not be negative, got {value!r}")
        scaled = exact * scale
        if scaled != scaled.to_integral_value():
            raise self.fail(name, f"{value!r} is not a whole number of {unit}")
        return int(scaled)

    def tables(self, name: str) -> list[TableReader]:
        value = self.table.get(name, [])
        if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
            raise self.fail(name, f"must be an array of tables ([[{self.key(name)}]])")
        return [TableReader(self.source, f"{self.key(name)}[{i}]", item) for i, item in enumerate(value)]

    def strings(self, name: str) -> list[tuple[str, str]]:
        """(key path, value) for each element, so errors point at the element."""
        value = self.table.get(name, [])
        if not isinstance(value, list):
            raise self.fail(name, f"must be an array of strings, not {type_name(value)}")
        out: list[tuple[str, str]] = []
        for i, item in enumerate(value):
            if not isinstance(item, str):
                raise self.fail(f"{name}[{i}]", f"must be a string, not {type_name(item)}")
            out.append((f"{name}[{i}]", item))
        return out


def type_name(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, datetime):
        return "a date-time"
    names = {int: "an integer", float: "a float", str: "a string", list: "an array",
             dict: "a table", date: "a date"}
    return names.get(type(value), type(value).__name__)
