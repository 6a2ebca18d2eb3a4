"""Edit forms from a tool's JSON Schema, and the args diff shown before approving."""

from __future__ import annotations

import pytest

from continuations_core import InvalidDecision
from continuations_core.inbox._forms import args_diff, form_fields, parse_form

SCHEMA = {
    "type": "object",
    "properties": {
        "to": {"type": "string", "description": "IBAN"},
        "amount": {"type": "integer"},
        "rate": {"type": "number"},
        "urgent": {"type": "boolean"},
        "currency": {"type": "string", "enum": ["EUR", "USD"]},
        "note": {"anyOf": [{"type": "string"}, {"type": "null"}]},
        "tags": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["to", "amount"],
}
ARGS = {"to": "DE89", "amount": 5, "rate": 1.5, "urgent": False, "tags": ["a"], "extra": {"x": 1}}


def test_each_schema_type_gets_its_widget_and_extra_args_are_json() -> None:
    """Strings, numbers, booleans, enums and nested values get fitting inputs."""
    fields = {f.name: f for f in form_fields(SCHEMA, ARGS)}
    assert {n: f.widget for n, f in fields.items()} == {
        "to": "text", "amount": "integer", "rate": "number", "urgent": "boolean",
        "currency": "choice", "note": "text", "tags": "json", "extra": "json",
    }  # fmt: skip
    assert fields["to"].required and fields["to"].description == "IBAN"
    assert fields["currency"].choices == ("EUR", "USD") and fields["currency"].value == ""
    assert fields["urgent"].value == "false" and fields["tags"].value.startswith("[")


def test_posted_values_are_read_back_as_their_types() -> None:
    """Numbers, booleans and JSON are converted; emptied optional inputs leave the arg out."""
    posted = {
        "arg.to": "FR76", "arg.amount": "7", "arg.rate": "2", "arg.urgent": "true",
        "arg.currency": "", "arg.tags": '["b", "c"]', "arg.extra": "",
    }  # fmt: skip
    assert parse_form(SCHEMA, ARGS, posted) == {
        "to": "FR76", "amount": 7, "rate": 2, "urgent": True, "tags": ["b", "c"],
    }  # fmt: skip


@pytest.mark.parametrize(
    ("field", "text"),
    [("amount", "7.5"), ("rate", "NaN"), ("rate", "inf"), ("urgent", "yes"), ("tags", "[1,")],
)
def test_unreadable_values_are_invalid_decisions(field: str, text: str) -> None:
    """A value that is not of its field's type is refused with the field's name."""
    with pytest.raises(InvalidDecision, match=field):
        parse_form(SCHEMA, ARGS, {f"arg.{field}": text})


def test_json_fields_refuse_nan_constants() -> None:
    """NaN and Infinity are not JSON, even inside a JSON field."""
    with pytest.raises(InvalidDecision):
        parse_form(SCHEMA, ARGS, {"arg.tags": "[NaN]"})


def test_the_diff_compares_leaves_by_dotted_key() -> None:
    """Changed, added, removed and unchanged leaves are reported, nested ones by dotted key."""
    rows = args_diff({"a": 1, "b": {"c": 2, "d": 3}, "e": 4}, {"a": 1, "b": {"c": 5}, "f": 6})
    assert [(r.key, r.change, r.before, r.after) for r in rows] == [
        ("a", "same", "1", "1"),
        ("b.c", "changed", "2", "5"),
        ("b.d", "removed", "3", None),
        ("e", "removed", "4", None),
        ("f", "added", None, "6"),
    ]
