"""Validation of OCSF documents against the official OCSF schema, as a package ships it.

The schema is the one schema.ocsf.io exports, bundled by the ``ocsf-json-schema`` package
(PyPI) for every released version; that package turns a class plus the profiles a document
names (``metadata.profiles``) into a JSON Schema (draft 2020-12: required attributes, enums,
patterns, no attribute the class does not define, the at-least-one constraints), which
``jsonschema`` checks. Nothing here is a copy of the schema. Shared by tests/unit/test_ocsf.py
and tests/kernel/test_ocsf_agent.py.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from jsonschema import Draft202012Validator
from ocsf_json_schema import OcsfJsonSchemaEmbedded, get_ocsf_schema, get_packaged_versions


@cache
def _schema(version: str) -> OcsfJsonSchemaEmbedded:
    if version not in get_packaged_versions():
        raise AssertionError(f"ocsf-json-schema has no OCSF {version} "
                             f"(it has {sorted(get_packaged_versions())})")
    return OcsfJsonSchemaEmbedded(get_ocsf_schema(version))


@cache
def _validator(version: str, class_uid: int, profiles: tuple[str, ...]) -> Draft202012Validator:
    schema = _schema(version)
    name = schema.lookup_class_name_from_uid(class_uid)
    js = schema.get_class_schema(name, list(profiles))
    Draft202012Validator.check_schema(js)
    return Draft202012Validator(js)


def ocsf_errors(doc: dict[str, Any]) -> list[str]:
    """Every way ``doc`` breaks the schema of its class, version and profiles (empty: valid)."""
    meta = doc.get("metadata") or {}
    v = _validator(str(meta.get("version")), int(doc["class_uid"]),
                   tuple(meta.get("profiles") or ()))
    return [f"{'/'.join(map(str, e.absolute_path)) or '<doc>'}: {e.message[:300]}"
            for e in sorted(v.iter_errors(doc), key=lambda e: list(map(str, e.path)))]


def assert_valid(doc: dict[str, Any]) -> None:
    errors = ocsf_errors(doc)
    assert not errors, f"{doc.get('type_name')}: " + "\n".join(errors)
