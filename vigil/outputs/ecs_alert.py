"""Alerts as Elastic Common Schema documents.

Owns the mapping of ``vigil.rules.alert.Alert`` to ECS: the matched event's whole document
(process, parent, user, file, ...) with ``event.kind: alert``, the ``rule.*`` fields, ``event.
severity`` and ``vigil.rule.level`` from the rule's level, ``threat.*`` from its ATT&CK tags,
``tags``, and ``vigil.alert`` (how many matches the alert stands for, since when, whether it
closes a suppression window, a correlation's group and events).
"""

from __future__ import annotations

from typing import Any

from vigil.outputs.ecs import iso
from vigil.rules.alert import SEVERITY, Alert
from vigil.rules.attack import threat


def alert_to_ecs(a: Alert) -> dict[str, Any]:
    r = a.rule
    doc = dict(a.event)   # shallow: the shared parts are replaced, never changed in place
    event = dict(doc.get("event", {}))
    event.update(kind="alert", severity=SEVERITY[r.level])
    doc["@timestamp"] = iso(a.timestamp_ns)
    doc["event"] = event
    rule: dict[str, Any] = {"name": r.title, "ruleset": r.ruleset}
    if r.id:
        rule["id"] = rule["uuid"] = r.id
    if r.description:
        rule["description"] = r.description
    if r.references:
        rule["reference"] = r.references[0]
    if r.author:
        rule["author"] = [who.strip() for who in r.author.split(",") if who.strip()]
    if r.license:
        rule["license"] = r.license
    doc["rule"] = rule
    if (t := threat(r.tags).to_ecs()) is not None:
        doc["threat"] = t
    if r.tags:
        doc["tags"] = list(r.tags)
    alert: dict[str, Any] = {"count": a.count, "first_seen": iso(a.first_ns or a.timestamp_ns),
                             "category": a.category}
    if a.repeat:
        alert["repeat"] = True
    if a.group:
        alert["group"] = a.group
    if a.related:
        alert["related"] = a.related
    vigil = dict(doc.get("vigil", {}))
    vigil["rule"] = {"level": r.level, "kind": r.kind, "source": r.where,
                     "references": list(r.references)}
    vigil["alert"] = alert
    doc["vigil"] = vigil
    return doc
