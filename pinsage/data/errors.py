"""The error every refusal of a dataset raises (the contract it enforces: :mod:`pinsage.data.dataset`)."""

from __future__ import annotations


class DatasetError(ValueError):
    """A dataset that does not follow the contract.

    Attributes:
        message: what is wrong, without the location prefix.
        file: the file name (e.g. ``"interactions.csv"``), or the directory for directory-level
            problems; None when not tied to a file.
        column: the column at fault, or None.
        row: the row as a user sees it in the file, or None. CSV: the 1-based line number of the
            record (header = line 1, first data row = line 2). Parquet: the 1-based data row.

    ``str(err)`` reads e.g.
    ``interactions.csv, column 'weight', row 17: expected a positive number, got '-3'``.
    """

    def __init__(self, message: str, *, file: str | None = None, column: str | None = None,
                 row: int | None = None):
        self.message = message
        self.file = file
        self.column = column
        self.row = row
        super().__init__(self._format())

    def _format(self) -> str:
        parts = []
        if self.file is not None:
            parts.append(str(self.file))
        if self.column is not None:
            parts.append(f"column '{self.column}'")
        if self.row is not None:
            parts.append(f"row {self.row}")
        return f"{', '.join(parts)}: {self.message}" if parts else self.message

    def __str__(self) -> str:
        return self._format()

    def __reduce__(self):  # keep the attributes across pickling (multiprocessing, Airflow)
        return (_rebuild_error, (type(self), self.message, self.file, self.column, self.row))


def _rebuild_error(cls, message, file, column, row):
    return cls(message, file=file, column=column, row=row)
