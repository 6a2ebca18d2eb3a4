"""Edit forms generated from a tool's JSON Schema, and the diff of edited args.

:func:`form_fields` turns the schema's top-level properties into inputs (text, number,
true/false, a choice for ``enum``, JSON for anything nested); :func:`parse_form` turns the
posted values back into args. It only converts types: the core validates the result against
the schema (``check_args``) when the decision is built, so a form can never loosen the rules.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from ..errors import InvalidDecision

__all__ = [
    "FIELD_PREFIX",
    "MAX_FIELD_CHARS",
    "DiffRow",
    "FormField",
    "args_diff",
    "form_fields",
    "parse_form",
    "pretty",
]

#: Form inputs for args are named ``arg.<name>`` so they cannot collide with control fields.
FIELD_PREFIX = "arg."
#: Longest value accepted for one field.
MAX_FIELD_CHARS = 100_000
# A string longer than this gets a textarea.
_LONG_TEXT = 80

Widget = Literal["text", "textarea", "integer", "number", "boolean", "choice", "json"]


@dataclass(frozen=True)
class FormField:
    """One input of an edit form."""

    name: str
    widget: Widget
    value: str
    required: bool
    description: str | None = None
    choices: tuple[str, ...] = ()

    @property
    def input_name(self) -> str:
        """The HTML name of the input."""
        return FIELD_PREFIX + self.name


@dataclass(frozen=True)
class DiffRow:
    """One changed (or unchanged) leaf of the args, with both sides as JSON text."""

    key: str
    change: Literal["changed", "added", "removed", "same"]
    before: str | None
    after: str | None


def pretty(value: Any) -> str:
    """Compact, readable JSON for a value (strings without quotes are ambiguous, so keep them)."""
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def _type_of(spec: Mapping[str, Any]) -> str | None:
    kind = spec.get("type")
    if isinstance(kind, list):  # ["string", "null"]: the non-null type decides the widget
        kinds = [k for k in kind if k != "null"]
        return kinds[0] if len(kinds) == 1 else None
    if kind is None and isinstance(spec.get("anyOf"), list):
        kinds = [s.get("type") for s in spec["anyOf"] if isinstance(s, Mapping)]
        kinds = [k for k in kinds if k != "null"]
        return kinds[0] if len(kinds) == 1 and isinstance(kinds[0], str) else None
    return kind if isinstance(kind, str) else None


def _widget(spec: Mapping[str, Any], value: Any) -> tuple[Widget, tuple[str, ...]]:
    enum = spec.get("enum")
    if isinstance(enum, list) and enum and all(isinstance(e, str) for e in enum):
        return "choice", tuple(enum)
    kind = _type_of(spec)
    if kind == "string":
        long = isinstance(value, str) and (len(value) > _LONG_TEXT or "\n" in value)
        return ("textarea" if long else "text"), ()
    if kind in ("integer", "number", "boolean"):
        return kind, ()  # type: ignore[return-value]
    return "json", ()


def _shown(widget: Widget, value: Any, present: bool) -> str:
    if not present or (value is None and widget != "json"):
        return ""
    if widget in ("text", "textarea", "choice") and isinstance(value, str):
        return value
    if widget == "boolean":
        return "true" if value is True else "false" if value is False else ""
    if widget in ("integer", "number") and isinstance(value, int | float):
        return json.dumps(value)
    return json.dumps(value, ensure_ascii=False, indent=2)


def form_fields(schema: Mapping[str, Any] | None, args: Mapping[str, Any]) -> list[FormField]:
    """The inputs for editing ``args``: one per schema property, then any extra args as JSON."""
    props = schema.get("properties") if schema else None
    props = props if isinstance(props, Mapping) else {}
    required = set(schema.get("required", ())) if schema else set()
    fields: list[FormField] = []
    for name, spec in props.items():
        spec = spec if isinstance(spec, Mapping) else {}
        widget, choices = _widget(spec, args.get(name))
        description = spec.get("description") or spec.get("title")
        fields.append(
            FormField(
                name=str(name),
                widget=widget,
                value=_shown(widget, args.get(name), name in args),
                required=name in required,
                description=str(description) if description else None,
                choices=choices,
            )
        )
    for name, value in args.items():
        if name not in props:
            fields.append(FormField(name=name, widget="json", value=pretty(value), required=False))
    return fields


def _bad(name: str, why: str) -> InvalidDecision:
    return InvalidDecision(f"The edited value of {name!r} {why}. Fix it and review again.")


def _parse(field: FormField, text: str) -> tuple[bool, Any]:
    """Return ``(present, value)`` for one posted input."""
    if len(text) > MAX_FIELD_CHARS:
        raise _bad(field.name, f"is longer than {MAX_FIELD_CHARS} characters")
    if field.widget == "choice" and not text:
        return False, None  # "(leave out)"
    if field.widget in ("text", "textarea", "choice"):
        return True, text
    stripped = text.strip()
    if not stripped:
        return False, None  # an emptied number, choice or JSON field leaves the arg out
    if field.widget == "boolean":
        if stripped not in ("true", "false"):
            raise _bad(field.name, "must be true or false")
        return True, stripped == "true"
    if field.widget == "integer":
        try:
            return True, int(stripped)
        except ValueError:
            raise _bad(field.name, "is not a whole number") from None
    if field.widget == "number":
        try:
            number = float(stripped)
        except ValueError:
            raise _bad(field.name, "is not a number") from None
        if number != number or number in (float("inf"), float("-inf")):
            raise _bad(field.name, "is not a finite number")
        return True, int(number) if number.is_integer() and "." not in stripped else number
    try:
        return True, json.loads(stripped, parse_constant=_refuse_constant)
    except ValueError as exc:
        raise _bad(field.name, f"is not valid JSON ({exc})") from None


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_form(
    schema: Mapping[str, Any] | None, args: Mapping[str, Any], form: Mapping[str, str]
) -> dict[str, Any]:
    """The args a posted edit form describes (types converted, not yet schema-validated).

    Raises:
        InvalidDecision: If a value cannot be read as its field's type.
    """
    edited: dict[str, Any] = {}
    for field in form_fields(schema, args):
        text = form.get(field.input_name)
        if text is None:
            continue  # not sent: an unchecked or removed input leaves the arg out
        present, value = _parse(field, text)
        if present:
            edited[field.name] = value
    return edited


def _flatten(value: Any, prefix: str, out: dict[str, Any]) -> None:
    if isinstance(value, Mapping) and value:
        for key in value:
            _flatten(value[key], f"{prefix}.{key}" if prefix else str(key), out)
    else:
        out[prefix] = value


def args_diff(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[DiffRow]:
    """Compare two args objects leaf by leaf (nested objects by dotted key)."""
    old: dict[str, Any] = {}
    new: dict[str, Any] = {}
    _flatten(dict(before), "", old)
    _flatten(dict(after), "", new)
    old.pop("", None)
    new.pop("", None)
    rows: list[DiffRow] = []
    for key in [*old, *(k for k in new if k not in old)]:
        if key not in new:
            rows.append(DiffRow(key, "removed", pretty(old[key]), None))
        elif key not in old:
            rows.append(DiffRow(key, "added", None, pretty(new[key])))
        else:
            same = pretty(old[key]) == pretty(new[key])
            rows.append(
                DiffRow(key, "same" if same else "changed", pretty(old[key]), pretty(new[key]))
            )
    return rows
