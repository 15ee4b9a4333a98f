"""One row of the parameter table (:mod:`pinsage.run.params`): a parameter's declaration, the check
of a value against it, and its JSON schema for the Airflow trigger form.

Stdlib only, like the table (the DAG files import it at parse time).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from pinsage.run.dotted import ParamError

# The trigger form's sections. Airflow's UI opens its default section ("Run Parameters": rows
# without a section, here the data) and keeps the others collapsed until clicked.
DATA, MODEL, TRAINING, REGISTRY, ENGINE, ADVANCED = None, "Model", "Training", "Registry", "Engine", "Advanced"
DEVICE = re.compile(r"^(auto|cpu|cuda(:[0-9]+)?)$")
CREDENTIALS = re.compile(r"(://[^/@:\s]*:)[^/@\s]*@")  # scheme://user:password@


@dataclass(frozen=True)
class Param:
    """One parameter. ``key``: dotted PipelineConfig key, or ``settings.<name>`` for a run setting.

    ``form``: the DAGs whose trigger form shows it; ``cli``: a flag of the command lines (run
    settings only on ``tasks``'); rows with neither are set through ``overrides`` and checked alike.
    """

    name: str
    key: str
    type: type
    default: Any
    title: str
    description: str
    section: str | None = ADVANCED
    minimum: float | None = None
    maximum: float | None = None
    above: float | None = None  # exclusive minimum
    choices: tuple | None = None
    # (regex the whole string must match, what that means in words); a refused value is shown with
    # any ``user:password@`` hidden, since it was refused for carrying one
    pattern: tuple[str, str] | None = None
    nullable: bool = False
    form: tuple[str, ...] = ()
    cli: bool = False

    @property
    def is_setting(self) -> bool:
        return self.key.startswith("settings.")

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def expected(self) -> str:
        """What a valid value is, in words (the tail of every refusal)."""
        if self.choices:
            extra = " (or cuda:N)" if self.key.endswith("device") else ""
            return f"one of {', '.join(map(str, self.choices))}{extra}"
        kind = {int: "an integer", float: "a finite number", str: "a string", bool: "true or false"}[self.type]
        bounds = [f"> {self.above:g}" if self.above is not None else "",
                  f">= {self.minimum:g}" if self.minimum is not None else "",
                  f"<= {self.maximum:g}" if self.maximum is not None else ""]
        bounds = " and ".join(b for b in bounds if b)
        if self.pattern:
            bounds = self.pattern[1]
        return f"{kind} {bounds}".strip() + (" (or empty)" if self.nullable else "")

    def check(self, value: Any, where: str | None = None) -> None:
        """ParamError (naming ``where``, default the key) unless ``value`` is valid here."""
        if value is None and self.nullable:
            return
        if self.type is bool:
            ok = isinstance(value, bool)
        elif self.type is int:
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif self.type is float:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        else:
            ok = isinstance(value, str)
        if ok and self.choices:
            ok = value in self.choices or (self.key.endswith("device") and bool(DEVICE.match(value)))
        if ok and self.type in (int, float):
            ok = ((self.minimum is None or value >= self.minimum) and (self.maximum is None or value <= self.maximum)
                  and (self.above is None or value > self.above))
        if ok and self.pattern:
            ok = re.fullmatch(self.pattern[0], value) is not None
        if not ok:
            shown = CREDENTIALS.sub(r"\1***@", value) if isinstance(value, str) else value
            raise ParamError(where or self.key, f"expected {self.expected()}, got {shown!r}")

    def schema(self) -> dict:
        """Airflow ``Param`` keywords (JSON schema) for the trigger form."""
        kind = {int: "integer", float: "number", str: "string", bool: "boolean"}[self.type]
        out: dict = {"type": ["null", kind] if self.nullable else kind, "title": self.title,
                     "description": self.description}
        for name, value in (("minimum", self.minimum), ("maximum", self.maximum), ("exclusiveMinimum", self.above)):
            if value is not None:
                out[name] = value
        if self.choices:
            out["enum"] = list(self.choices)
        if self.type is str and not self.nullable and not self.choices:
            out["minLength"] = 1
        if self.pattern:
            out["pattern"] = self.pattern[0]
        if self.section:
            out["section"] = self.section
        return out
