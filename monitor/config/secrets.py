"""A value that must never be printed: API keys, tokens, passwords."""

from __future__ import annotations

from typing import Any

from pydantic_core import core_schema

MASK = "***"


class Secret:
    """Holds a secret string; ``str``, ``repr`` and ``format`` show ``***``. Use ``reveal()`` to send it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __str__(self) -> str:
        return MASK

    def __repr__(self) -> str:
        return f"Secret({MASK})"

    def __format__(self, spec: str) -> str:
        return MASK

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", self._value))

    def __bool__(self) -> bool:
        return bool(self._value)

    def __reduce__(self) -> Any:  # pickling would be a way to leak it; refuse
        raise TypeError("Secret values cannot be pickled")

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: Any) -> core_schema.CoreSchema:
        def coerce(v: Any) -> Secret:
            if isinstance(v, Secret):
                return v
            if isinstance(v, str):
                return cls(v)
            raise ValueError("expected a string")

        return core_schema.no_info_plain_validator_function(
            coerce,
            serialization=core_schema.plain_serializer_function_ser_schema(lambda s: MASK),
        )
