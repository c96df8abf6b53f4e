"""Alerts as OCSF Detection Findings (2004).

Owns the mapping of ``vigil.rules.alert.Alert``: the rule as ``finding_info`` (title,
description, the rule as ``analytic``, ATT&CK tactics and techniques as ``attacks``, first
and last seen, how many matches the alert stands for), the rule's level as ``severity_id``,
and the matched event as evidence: its actor, process, file and endpoints, rendered by the
same mapping as the event itself (vigil.outputs.ocsf). A first match is activity "Create";
the repeat a suppression window closes with is "Update" of the same finding. The rule's
other metadata, the alert's own fields and what of the matched event does not map stay
under ``unmapped``.

``finding_info.uid`` is derived from the host, the rule and the alert's time and count, so
every output that renders the same alert gives it the same uid.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any, Final

from vigil.outputs.ecs import iso
from vigil.outputs.ocsf_base import device, envelope, metadata
from vigil.rules.alert import Alert
from vigil.rules.attack import TECHNIQUES, threat

DETECTION_FINDING: Final = 2004
SEVERITY_IDS: Final = {"informational": 1, "low": 2, "medium": 3, "high": 4, "critical": 5}
_EVIDENCE: Final = ("actor", "process", "file", "src_endpoint", "dst_endpoint")
_NAMESPACE: Final = uuid.UUID("5b0f3c2e-6a51-4d8e-9b8c-7f0e9a6d2c41")   # Vigil's findings

Render = Callable[[dict[str, Any], int, "dict[str, Any] | None"], dict[str, Any]]


def _attacks(tags: tuple[str, ...]) -> list[dict[str, Any]]:
    """One ``attack`` per tactic and per technique (with its sub-techniques): Sigma's tags
    do not say which technique serves which tactic, so none is paired with a guess."""
    t = threat(tags)
    out: list[dict[str, Any]] = []
    for i, name in enumerate(t.tactics):
        tactic: dict[str, Any] = {"name": name}
        if t.tactic_ids:
            tactic["uid"] = t.tactic_ids[i]
        out.append({"tactic": tactic})
    for tech in t.techniques:
        entry: dict[str, Any] = {"technique": _named(tech)}
        subs = [s for s in t.subtechniques if s.startswith(tech + ".")]
        for sub in subs:
            out.append({**entry, "sub_technique": _named(sub)})
        if not subs:
            out.append(entry)
    return out


def _named(uid: str) -> dict[str, Any]:
    return {"uid": uid, "name": TECHNIQUES[uid]} if uid in TECHNIQUES else {"uid": uid}


def finding(a: Alert, host: dict[str, Any] | None, render: Render) -> dict[str, Any]:
    """The Detection Finding of one alert; ``render`` is the event mapping (ECS -> OCSF)
    that gives the matched event's evidence."""
    r = a.rule
    ev_doc = a.event or {}
    matched = render(ev_doc, a.timestamp_ns, host) if ev_doc else {}
    activity, name = (2, "Update") if a.repeat else (1, "Create")
    out = envelope(DETECTION_FINDING, activity, name,
                   {"event": {"dataset": "vigil.alert", "action": r.key},
                    "@timestamp": iso(a.timestamp_ns)},
                   a.timestamp_ns, SEVERITY_IDS.get(r.level, 3))
    if r.tags:
        out["metadata"] = {**metadata({"event": {"dataset": "vigil.alert",
                                                 "action": r.key}}),
                           "labels": list(r.tags)}
    out["status_id"], out["status"] = 1, "New"
    out["message"] = r.title
    first = a.first_ns or a.timestamp_ns
    hostname = str((host or {}).get("hostname", ""))
    info: dict[str, Any] = {
        "uid": str(uuid.uuid5(_NAMESPACE, f"{hostname}\0{r.key}\0{first}\0{a.timestamp_ns}"
                                          f"\0{a.count}\0{a.repeat}")),
        "title": r.title,
        "analytic": {"name": r.title, "type_id": 1, "type": "Rule", "category": r.ruleset},
        "created_time": a.timestamp_ns // 1_000_000,
        "first_seen_time": first // 1_000_000,
        "last_seen_time": a.timestamp_ns // 1_000_000,
        "related_events_count": a.count,
        "types": [a.category],
    }
    if r.id:
        info["analytic"]["uid"] = r.id
    if r.description:
        info["desc"] = r.description
    if r.references:
        info["src_url"] = r.references[0]
    dataset = (ev_doc.get("event") or {}).get("dataset")
    if isinstance(dataset, str):
        info["data_sources"] = [dataset]
    attacks = _attacks(r.tags)
    if attacks:
        info["attacks"] = attacks
    out["finding_info"] = info
    evidence: dict[str, Any] = {k: matched[k] for k in _EVIDENCE if k in matched}
    if not evidence:   # a health check, a correlation without an event: its data
        evidence["data"] = {"event": ev_doc} if ev_doc else {"group": a.group,
                                                            "related": a.related}
    out["evidences"] = [evidence]
    if "actor" in matched:
        out["actor"] = matched["actor"]
    dev, _ = device(host if host is not None else ev_doc.get("host"))
    if dev is not None:
        out["device"] = dev
    out["unmapped"] = _unmapped(a, matched)
    return out


def _unmapped(a: Alert, matched: dict[str, Any]) -> dict[str, Any]:
    r = a.rule
    rule: dict[str, Any] = {"level": r.level, "kind": r.kind, "source": r.where,
                            "ruleset": r.ruleset, "references": list(r.references)}
    if r.author:
        rule["author"] = r.author
    if r.license:
        rule["license"] = r.license
    alert: dict[str, Any] = {"count": a.count, "category": a.category}
    if a.repeat:
        alert["repeat"] = True
    if a.group:
        alert["group"] = a.group
    if a.related:
        alert["related"] = a.related
    um: dict[str, Any] = {"vigil": {"rule": rule, "alert": alert}}
    if matched:
        event: dict[str, Any] = {k: matched[k] for k in ("class_uid", "type_uid", "type_name",
                                                         "time") if k in matched}
        if "unmapped" in matched:
            event["unmapped"] = matched["unmapped"]
        um["event"] = event
    return um
