"""Events as Open Cybersecurity Schema Framework (OCSF 1.8.0) documents.

Owns the public API (``ocsf_documents``: a batch of outputs -> one OCSF document each) and
which class renders which event. Every document is rendered from the event's ECS document
(vigil.outputs.ecs; a ``Batch`` renders each once for every reader): an alert carries only
its matched event's ECS document, so one mapping serves events and the evidence of
findings, and the ECS document already holds everything Vigil knows (its ``vigil`` object
goes to ``unmapped.vigil`` unchanged). The typed event gives the time (nanoseconds).

| Vigil (ECS dataset, action)          | OCSF class (activity)                               |
|--------------------------------------|-----------------------------------------------------|
| vigil.file                           | File System Activity 1001 (vigil.outputs.ocsf_file)  |
| vigil.fim changes / scan facts       | File System Activity 1001 / Scan Activity 6007      |
| vigil.process exec / exit            | Process Activity 1007 Launch / Terminate            |
| vigil.privilege                      | Process Activity 1007 Set User ID / Other           |
| vigil.shell                          | Script Activity 1009 Execute                        |
| vigil.network                        | Network Activity 4001 (vigil.outputs.ocsf_net)       |
| vigil.tampering                      | 1002 / 1003 / 1004 / 1007 / 1001 (ocsf_sec)         |
| vigil.agent events-lost              | Application Error 6008 General Error                |
| an alert                             | Detection Finding 2004 (vigil.outputs.ocsf_finding)  |
| anything else                        | Base Event 0, Other, its fields under unmapped      |
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Final

from vigil.outputs.base import Output
from vigil.outputs.batch import Batch, ecs_document
from vigil.outputs.ocsf_actor import who
from vigil.outputs.ocsf_base import OCSF_VERSION, OTHER, envelope, finish
from vigil.outputs.ocsf_file import file_event, fim_event
from vigil.outputs.ocsf_finding import finding
from vigil.outputs.ocsf_net import net_event
from vigil.outputs.ocsf_process import cred_event, exec_event, exit_event, shell_event
from vigil.outputs.ocsf_sec import sec_event
from vigil.rules.alert import Alert

__all__ = ["OCSF_VERSION", "ocsf_document", "ocsf_documents", "ocsf_from_ecs"]

Renderer = Callable[[dict[str, Any], int, "dict[str, Any] | None"], dict[str, Any]]


def _process(doc: dict[str, Any], time_ns: int, host: dict[str, Any] | None
             ) -> dict[str, Any]:
    if doc["event"].get("action") == "exit":
        return exit_event(doc, time_ns, host)
    return exec_event(doc, time_ns, host)


def _lost(doc: dict[str, Any], time_ns: int, host: dict[str, Any] | None) -> dict[str, Any]:
    """Events the agent could not deliver: an error of the application that produces the
    events, Medium (a blind spot a SOC should see)."""
    out = envelope(6008, 1, "General Error", doc, time_ns, 3)
    drops = (doc.get("vigil") or {}).get("drops") or {}
    out["message"] = f"{drops.get('count', '?')} {drops.get('kind', 'unknown')} events lost"
    return finish(out, doc, host)


def _other(doc: dict[str, Any], time_ns: int, host: dict[str, Any] | None) -> dict[str, Any]:
    """A kind this module does not know (yet): Base Event "Other", nothing lost."""
    action = (doc.get("event") or {}).get("action")
    out = envelope(0, OTHER, str(action or "Other"), doc, time_ns)
    if isinstance(doc.get("message"), str):
        out["message"] = doc["message"]
    if doc.get("process") or doc.get("user"):
        out["actor"] = who(doc)[0]
    um = {k: v for k, v in doc.items()
          if k not in ("@timestamp", "ecs", "host", "vigil", "message", "error")}
    return finish(out, doc, host, um)


_BY_DATASET: Final[dict[str, Renderer]] = {
    "vigil.file": file_event,
    "vigil.fim": fim_event,
    "vigil.process": _process,
    "vigil.network": net_event,
    "vigil.privilege": cred_event,
    "vigil.tampering": sec_event,
    "vigil.shell": shell_event,
    "vigil.agent": _lost,
}


def ocsf_from_ecs(doc: dict[str, Any], time_ns: int, host: dict[str, Any] | None = None
                  ) -> dict[str, Any]:
    """The OCSF document of an event's ECS document (``time_ns``: the event's time)."""
    dataset = (doc.get("event") or {}).get("dataset")
    render = _BY_DATASET.get(dataset, _other) if isinstance(dataset, str) else _other
    if render is not _other and not isinstance(doc.get("vigil"), dict):
        render = _other
    return render(doc, time_ns, host)


def ocsf_document(ev: Output, doc: dict[str, Any] | None, host: dict[str, Any]
                  ) -> dict[str, Any]:
    """One output as OCSF; ``doc`` is its ECS document when the caller has it."""
    if isinstance(ev, Alert):
        return finding(ev, host, ocsf_from_ecs)
    return ocsf_from_ecs(doc if doc is not None else ecs_document(ev, host), ev.timestamp_ns,
                         host)


# the last Batch rendered and its documents: a second OCSF sink (a file and syslog, say)
# gets the same documents (shared, like the Batch's ECS ones: readers never change them)
_last: list[Any] = [None, None, None]


def ocsf_documents(events: Sequence[Output], host: dict[str, Any]) -> list[dict[str, Any]]:
    """The OCSF documents of a batch, in order: from a ``Batch``'s ECS documents (rendered
    once for every reader), else from ECS documents made now."""
    if not isinstance(events, Batch):
        return [ocsf_document(ev, None, host) for ev in events]
    last = _last
    if last[0] is events and last[1] is host:
        docs: list[dict[str, Any]] = last[2]
        return docs
    docs = []
    for i, ev in enumerate(events):
        if type(ev) is Alert:
            docs.append(finding(ev, host, ocsf_from_ecs))
        else:
            docs.append(ocsf_from_ecs(events.doc(i), ev.timestamp_ns, host))
    last[:] = [events, host, docs]
    return docs
