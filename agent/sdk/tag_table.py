"""A device's tags kept as columns of values: a fraction of the memory of one model per tag.

A validated tag is a frozen pydantic model, and each one carries its own
``__dict__`` of every field (17 for a Modbus tag: ~550 B, most of them the
same defaults).  A gateway holds thousands of them for as long as it runs.
:class:`TagTable` keeps, per field, either the one value every tag has or a
tuple of one value per tag (8 B a tag), and gives each tag back as the same
model, built on access; the values are the very objects validation made.

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


class _Same:
    """A column whose value is the same for every tag (most options, usually)."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Same) and self.value == other.value

    __hash__ = None  # type: ignore[assignment]

    def __reduce__(self) -> tuple[Any, ...]:
        return (_Same, (self.value,))


#: Per field: one value for all tags, or one value per tag.
Column = _Same | tuple[Any, ...]


#: Values shared by equality; anything else (a ``map`` dict) only when it is the same object.
_IMMUTABLE = frozenset({str, int, float, bool, type(None), tuple, frozenset})


def _column(values: list[Any]) -> Column:
    first = values[0]
    # Equal and of the same type (1 == 1.0 == True stay apart), immutable.
    by_value = type(first) in _IMMUTABLE
    if all(v is first or (by_value and type(v) is type(first) and v == first) for v in values):
        return _Same(first)
    return tuple(values)


class TagTable(Sequence[T], Generic[T]):
    """The tags of one device: their model, its field names, and the values by field."""

    __slots__ = ("_columns", "_count", "_given", "_model", "_names")

    def __init__(self, model: type[T], names: tuple[str, ...], columns: tuple[Column, ...],
                 given: Column, count: int) -> None:
        self._model = model
        self._names = names
        self._columns = columns
        #: The keys the file gave (pydantic's "fields set"), as a column of frozensets.
        self._given = given
        self._count = count

    @classmethod
    def of(cls, tags: Sequence[T]) -> TagTable[T] | None:
        """``tags`` as a table, or None when they are not all plain tags of one frozen model."""
        if not tags:
            return None
        model = type(tags[0])
        if not model.model_config.get("frozen"):
            return None
        names = tuple(model.model_fields)
        values: list[list[Any]] = [[] for _ in names]
        given: list[frozenset[str]] = []
        sets: dict[frozenset[str], frozenset[str]] = {}
        for tag in tags:
            # Anything beyond declared fields (extras, private state) would be
            # lost in a table: such tags stay models.
            if (type(tag) is not model or tag.__pydantic_extra__
                    or tag.__pydantic_private__ or tag.__dict__.keys() != model.model_fields.keys()):
                return None
            fields = tag.__dict__
            for column, name in zip(values, names, strict=True):
                column.append(fields[name])
            keys = frozenset(tag.__pydantic_fields_set__)
            given.append(sets.setdefault(keys, keys))
        return cls(model, names, tuple(_column(v) for v in values), _column(given), len(tags))

    def column(self, field: str) -> list[Any]:
        """One field of every tag, in order, without building the tags."""
        if field not in self._names:
            raise AttributeError(f"{self._model.__name__} has no field {field!r}")
        column = self._columns[self._names.index(field)]
        return [column.value] * self._count if isinstance(column, _Same) else list(column)

    def find(self, name: str) -> T | None:
        """The tag called ``name`` (built once), or None; a scan of names, no tag built."""
        for i, value in enumerate(self.column("name")):
            if value == name:
                return self._tag(i)
        return None

    def _tag(self, i: int) -> T:
        tag = self._model.__new__(self._model)
        # What pydantic's own __setstate__ (unpickling) does, without the
        # state dict: no validation, the values as they are.
        _set(tag, "__dict__", {name: c.value if isinstance(c, _Same) else c[i]
                               for name, c in zip(self._names, self._columns, strict=True)})
        given = self._given
        _set(tag, "__pydantic_fields_set__", set(given.value if isinstance(given, _Same)
                                                 else given[i]))
        _set(tag, "__pydantic_extra__", None)
        _set(tag, "__pydantic_private__", None)
        return tag

    @overload
    def __getitem__(self, index: int) -> T: ...
    @overload
    def __getitem__(self, index: slice) -> list[T]: ...

    def __getitem__(self, index: int | slice) -> T | list[T]:
        if isinstance(index, slice):
            return [self._tag(i) for i in range(*index.indices(self._count))]
        if index < 0:
            index += self._count
        if not 0 <= index < self._count:
            raise IndexError("tag index out of range")
        return self._tag(index)

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[T]:
        for i in range(self._count):
            yield self._tag(i)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, TagTable):
            if self._count != other._count or self._model is not other._model:
                return False
            if (self._names == other._names and self._columns == other._columns
                    and self._given == other._given):
                return True
            # The same tags may be stored differently (a column constant in one).
        if isinstance(other, Sequence) and not isinstance(other, str | bytes):
            return len(other) == len(self) and all(a == b for a, b in zip(self, other, strict=True))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # as the list it stands for

    def __repr__(self) -> str:
        return repr(list(self))

    def __reduce__(self) -> tuple[Any, ...]:
        return (TagTable, (self._model, self._names, self._columns, self._given, self._count))
