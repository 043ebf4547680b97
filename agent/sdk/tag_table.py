"""A device's tags kept as rows of values: a third of the memory of one model per tag.

A validated tag is a frozen pydantic model, and each one carries its own
``__dict__`` of every field (17 for a Modbus tag: ~550 B, most of them the
same defaults).  A gateway holds thousands of them for as long as it runs.
:class:`TagTable` keeps one tuple of field values per tag instead (~180 B)
and gives each tag back as the same model, built on access; the values in
the rows are the very objects validation made.

It is a read-only :class:`~collections.abc.Sequence` of the device's tag
model, which is what ``DeviceConfig.tags`` always promised.  What changes:
each access builds a new, equal object (compare tags with ``==`` or by
``name``, never with ``is``), so code that looks tags up per reading should
keep what it needs from them once, as the drivers' plans already do.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Generic, TypeVar, overload

from pydantic import BaseModel

__all__ = ["TagTable"]

T = TypeVar("T", bound=BaseModel)

_set = object.__setattr__


class TagTable(Sequence[T], Generic[T]):
    """The tags of one device: their model, its field names, and one row of values per tag."""

    __slots__ = ("_given", "_model", "_names", "_rows")

    def __init__(self, model: type[T], names: tuple[str, ...],
                 rows: tuple[tuple[Any, ...], ...],
                 given: tuple[frozenset[str], ...]) -> None:
        self._model = model
        self._names = names
        self._rows = rows
        #: Per row, the keys the file gave (pydantic's "fields set"), shared.
        self._given = given

    @classmethod
    def of(cls, tags: Sequence[T]) -> TagTable[T] | None:
        """``tags`` as a table, or None when they are not all plain tags of one frozen model."""
        if not tags:
            return None
        model = type(tags[0])
        if not model.model_config.get("frozen"):
            return None
        names = tuple(model.model_fields)
        rows: list[tuple[Any, ...]] = []
        given: list[frozenset[str]] = []
        sets: dict[frozenset[str], frozenset[str]] = {}
        for tag in tags:
            # Anything beyond declared fields (extras, private state) would be
            # lost in a row: such tags stay models.
            if (type(tag) is not model or tag.__pydantic_extra__
                    or tag.__pydantic_private__ or tag.__dict__.keys() != model.model_fields.keys()):
                return None
            values = tag.__dict__
            rows.append(tuple(values[name] for name in names))
            keys = frozenset(tag.__pydantic_fields_set__)
            given.append(sets.setdefault(keys, keys))
        return cls(model, names, tuple(rows), tuple(given))

    def column(self, field: str) -> list[Any]:
        """One field of every tag, in order, without building the tags."""
        if field not in self._names:
            raise AttributeError(f"{self._model.__name__} has no field {field!r}")
        at = self._names.index(field)
        return [row[at] for row in self._rows]

    def find(self, name: str) -> T | None:
        """The tag called ``name`` (built once), or None; a scan of names, no tag built."""
        at = self._names.index("name")
        for i, row in enumerate(self._rows):
            if row[at] == name:
                return self._tag(i)
        return None

    def _tag(self, i: int) -> T:
        tag = self._model.__new__(self._model)
        # What pydantic's own __setstate__ (unpickling) does, without the
        # state dict: no validation, the values as they are.  ~7 us a tag.
        _set(tag, "__dict__", dict(zip(self._names, self._rows[i], strict=True)))
        _set(tag, "__pydantic_fields_set__", set(self._given[i]))
        _set(tag, "__pydantic_extra__", None)
        _set(tag, "__pydantic_private__", None)
        return tag

    @overload
    def __getitem__(self, index: int) -> T: ...
    @overload
    def __getitem__(self, index: slice) -> list[T]: ...

    def __getitem__(self, index: int | slice) -> T | list[T]:
        if isinstance(index, slice):
            return [self._tag(i) for i in range(*index.indices(len(self._rows)))]
        if index < 0:
            index += len(self._rows)
        if not 0 <= index < len(self._rows):
            raise IndexError("tag index out of range")
        return self._tag(index)

    def __len__(self) -> int:
        return len(self._rows)

    def __iter__(self) -> Iterator[T]:
        for i in range(len(self._rows)):
            yield self._tag(i)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, TagTable):
            return (self._model is other._model and self._names == other._names
                    and self._rows == other._rows and self._given == other._given)
        if isinstance(other, Sequence) and not isinstance(other, str | bytes):
            return len(other) == len(self) and all(a == b for a, b in zip(self, other, strict=True))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # as the list it stands for

    def __repr__(self) -> str:
        return repr(list(self))

    def __reduce__(self) -> tuple[Any, ...]:
        return (TagTable, (self._model, self._names, self._rows, self._given))
