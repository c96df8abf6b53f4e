"""OCSF output: one typed event of every kind Vigil emits (tests/unit/ocsf_kinds.py),
rendered and validated against the official OCSF schema that the ``ocsf-json-schema`` package
ships (tests/unit/ocsf_validate.py), and the values a SOC reads checked one by one (class,
activity, type_uid, file path, actor pid, hashes, endpoints, the finding's rule). The JSON lines
sink keeps ECS byte for byte and writes OCSF when asked."""

from __future__ import annotations

import base64
import copy
import os
import socket
from pathlib import Path
from typing import Any

import orjson
import pytest
from ocsf_kinds import HOST, SHA, T, every_kind, proc
from ocsf_validate import assert_valid, ocsf_errors

import vigil
from vigil.events.model import FileEvent, FileOp
from vigil.outputs.base import Output
from vigil.outputs.batch import Batch, ecs_document, ecs_documents
from vigil.outputs.jsonl import JsonLinesSink
from vigil.outputs.ocsf import OCSF_VERSION, ocsf_documents, ocsf_from_ecs

KINDS = every_kind()


def render(ev: Output) -> dict[str, Any]:
    return ocsf_documents([ev], HOST)[0]


@pytest.mark.parametrize("name", sorted(KINDS))
def test_every_kind_validates_against_the_ocsf_schema(name: str) -> None:
    doc = render(KINDS[name])
    assert_valid(doc)
    assert doc["type_uid"] == doc["class_uid"] * 100 + doc["activity_id"]
    assert doc["category_uid"] == doc["class_uid"] // 1000
    assert doc["metadata"]["version"] == OCSF_VERSION == "1.8.0"
    assert doc["metadata"]["product"]["name"] == "Vigil"
    assert doc["metadata"]["product"]["version"] == vigil.__version__
    assert doc["device"]["hostname"] == socket.gethostname()
    assert doc["device"]["os"]["type_id"] == 200
    assert doc["time"] == T // 1_000_000
    assert orjson.loads(orjson.dumps(doc)) == doc     # plain JSON, no null anywhere on top


def test_the_validator_can_fail() -> None:
    """The package's schema is strict: a wrong activity, a missing required object, an
    attribute the class does not have, and a profile's attribute without the profile."""
    doc = render(KINDS["file-create"])
    broken = [copy.deepcopy(doc) for _ in range(4)]
    broken[0]["activity_id"] = 42
    del broken[1]["actor"]
    broken[2]["file"]["inode"] = "1234"
    broken[3]["metadata"] = {**doc["metadata"], "profiles": ["host"]}
    for b in broken:
        assert ocsf_errors(b)


FILE_ACTIVITIES = {
    FileOp.CREATE: 1, FileOp.MKDIR: 1, FileOp.MKNOD: 1, FileOp.LINK: 1, FileOp.SYMLINK: 1,
    FileOp.MODIFY: 3, FileOp.TRUNCATE: 3, FileOp.DELETE: 4, FileOp.RMDIR: 4,
    FileOp.RENAME: 5, FileOp.SETXATTR: 6, FileOp.REMOVEXATTR: 6, FileOp.CHMOD: 7,
    FileOp.CHOWN: 7, FileOp.OPEN: 14,
}


@pytest.mark.parametrize("op", list(FileOp))
def test_file_operations_activities(op: FileOp) -> None:
    doc = render(KINDS[f"file-{op.name.lower()}"])
    assert (doc["class_uid"], doc["activity_id"]) == (1001, FILE_ACTIVITIES[op])
    assert doc["type_uid"] == 100100 + FILE_ACTIVITIES[op]
    assert doc["actor"]["process"]["pid"] == 4242
    assert doc["actor"]["process"]["uid"] == "4242-777"
    assert doc["actor"]["process"]["cmd_line"] == "vim -n a file"
    assert doc["actor"]["user"] == {"uid": "1000", "name": "alice"}
    assert doc["actor"]["session"] == {"uid": "12"}
    if op == FileOp.RENAME:
        assert doc["file"]["path"] == "/srv/w/f"
        assert doc["file_result"]["path"] == "/srv/w/new"
        assert doc["file_result"]["uid"] == "1234"
    elif op == FileOp.LINK:
        assert doc["file"]["path"] == "/srv/w/new"
        assert doc["unmapped"]["vigil"]["file"]["original_path"] == "/srv/w/f"
    else:
        assert doc["file"]["path"] == "/srv/w/f"
        assert doc["file"]["name"] == "f"
        assert doc["file"]["parent_folder"] == "/srv/w"
    if op == FileOp.OPEN:
        assert (doc["status_id"], doc["status_code"]) == (2, "EACCES")
    else:
        assert doc["status_id"] == 1


def test_file_details_and_unmapped() -> None:
    assert render(KINDS["file-mkdir"])["file"]["type_id"] == 2
    assert render(KINDS["file-symlink"])["file"]["type_id"] == 7
    assert render(KINDS["file-symlink"])["unmapped"]["file"]["target_path"] == "../target"
    assert render(KINDS["file-chmod"])["unmapped"]["file"]["mode"] == "0640"
    chown = render(KINDS["file-chown"])
    assert chown["file"]["owner"] == {"uid": "0"} and chown["unmapped"]["file"]["gid"] == "0"
    assert render(KINDS["file-setxattr-security"])["activity_id"] == 7
    odd = render(KINDS["file-not-utf8"])
    assert base64.b64decode(odd["unmapped"]["file"]["path_bytes_b64"]) == b"/srv/w/\xff\xfe"
    assert render(KINDS["file-truncated-path"])["unmapped"]["vigil"]["file"]["path_truncated"]
    assert render(KINDS["file-container"])["actor"]["process"]["container"] == {
        "uid": "a" * 64, "runtime": "docker"}
    assert render(KINDS["file-protected"])["unmapped"]["vigil"]["protected"] == "self"
    failed = render(KINDS["file-failed-unlink"])
    assert (failed["activity_id"], failed["status"], failed["status_code"]) == (
        4, "Failure", "EPERM")


def test_exec_and_exit() -> None:
    doc = render(KINDS["exec"])
    assert (doc["class_uid"], doc["activity_id"], doc["launch_type_id"]) == (1007, 1, 3)
    proc_ = doc["process"]
    assert (proc_["pid"], proc_["uid"], proc_["name"]) == (5000, "5000-777", "curl")
    assert proc_["file"]["path"] == "/usr/bin/curl"
    assert proc_["file"]["hashes"] == [{"algorithm_id": 3, "algorithm": "SHA-256",
                                        "value": SHA}]
    assert proc_["working_directory"] == "/home/alice"
    assert proc_["parent_process"]["pid"] == 4000
    assert doc["actor"]["process"]["pid"] == 4000       # the parent launched it
    assert doc["unmapped"]["process"]["args"] == ["curl", "-n", "a file"]
    assert "hashes" not in render(KINDS["exec-unhashed"])["process"]["file"]
    ex = render(KINDS["exit"])
    assert (ex["activity_id"], ex["exit_code"], ex["process"]["pid"]) == (2, 3, 4242)
    assert ex["actor"]["process"]["pid"] == 4242        # reflexive
    assert render(KINDS["exit-signal"])["exit_code"] == 128 + 9


def test_network() -> None:
    c = render(KINDS["net-connect"])
    assert (c["class_uid"], c["activity_id"]) == (4001, 1)
    assert c["src_endpoint"] == {"ip": "127.0.0.1", "port": 40000}
    assert c["dst_endpoint"] == {"ip": "127.0.0.2", "port": 8080}
    assert c["connection_info"]["direction_id"] == 2
    assert c["connection_info"]["protocol_num"] == 6
    assert c["connection_info"]["boundary_id"] == 1
    assert c["actor"]["process"]["pid"] == 4242
    a = render(KINDS["net-accept"])
    assert (a["activity_id"], a["connection_info"]["direction_id"]) == (1, 1)
    assert a["src_endpoint"]["ip"] == "127.0.0.2"       # the peer initiated
    assert render(KINDS["net-listen"])["activity_id"] == 7
    assert render(KINDS["net-bind"])["activity_name"] == "Bind"
    assert render(KINDS["net-udp_send"])["connection_info"]["protocol_name"] == "udp"
    assert render(KINDS["net-refused"])["activity_id"] == 5
    assert render(KINDS["net-timeout"])["activity_id"] == 4
    assert render(KINDS["net-ipv6"])["connection_info"]["protocol_ver_id"] == 6
    assert render(KINDS["net-unix_connect"])["dst_endpoint"] == {"name": "/run/app.sock"}


def test_privilege_changes() -> None:
    su = render(KINDS["cred-setresuid"])
    assert (su["class_uid"], su["activity_id"]) == (1007, 5)
    assert su["process"]["user"] == {"uid": "0"} and su["process"]["euid"] == 0
    assert su["actor"]["user"]["uid"] == "1000"         # who it was
    assert su["unmapped"]["vigil"]["privilege"]["capabilities_gained"] == ["CAP_SYS_ADMIN"]
    assert render(KINDS["cred-exec"])["activity_id"] == 5
    assert render(KINDS["cred-escalation"])["activity_id"] == 5
    g = render(KINDS["cred-setgid"])
    assert (g["activity_id"], g["activity_name"]) == (99, "Set Group ID")
    assert render(KINDS["cred-capset"])["activity_name"] == "Set Capabilities"


def test_tampering_classes() -> None:
    expect = {"module_load": (1002, 1), "bpf_prog_load": (1003, 1), "bpf_attach": (1003, 1),
              "bpf_own": (1003, 2), "ptrace": (1007, 3), "vm_write": (1004, 8),
              "mount": (1001, 12), "umount": (1001, 13), "pivot_root": (1001, 99),
              "signal": (1007, 2)}
    for name, (cls, act) in expect.items():
        doc = render(KINDS[f"sec-{name}"])
        assert (doc["class_uid"], doc["activity_id"]) == (cls, act), name
    assert render(KINDS["sec-module_load"])["driver"]["file"]["name"] == "rootkit"
    assert render(KINDS["sec-bpf_prog_load"])["kernel"]["name"] == "evil_prog"
    assert render(KINDS["sec-ptrace"])["process"]["pid"] == 900
    assert render(KINDS["sec-vm_write"])["size"] == 4096
    assert render(KINDS["sec-mount"])["file"]["path"] == "/mnt/x"
    assert render(KINDS["sec-signal-hup"])["activity_name"] == "Signal"
    assert render(KINDS["sec-failed"])["status_id"] == 2


def test_shell_and_lost() -> None:
    sh = render(KINDS["shell"])
    assert (sh["class_uid"], sh["activity_id"]) == (1009, 1)
    assert sh["script"]["type_id"] == 6
    assert sh["script"]["script_content"] == {"value": "sudo -i"}
    assert sh["actor"]["session"] == {"uid": "12", "terminal": "pts/3"}
    assert sh["actor"]["process"]["pid"] == 4000
    assert render(KINDS["shell-truncated"])["script"]["script_content"]["is_truncated"]
    lost = render(KINDS["lost"])
    assert (lost["class_uid"], lost["activity_id"], lost["severity_id"]) == (6008, 1, 3)
    assert lost["message"] == "17 file events lost"
    assert lost["unmapped"]["vigil"]["drops"]["count"] == 17


def test_fim() -> None:
    added = render(KINDS["fim-added"])
    assert (added["class_uid"], added["activity_id"]) == (1001, 1)
    hashes = {h["algorithm_id"]: h["value"] for h in added["file"]["hashes"]}
    assert hashes == {3: SHA, 1: "d41d8cd98f00b204e9800998ecf8427e"}
    assert added["file"]["size"] == 12 and added["file"]["type_id"] == 1
    assert added["file"]["owner"] == {"uid": "0", "name": "root"}
    assert added["file"]["xattributes"] == {"security.selinux": "system"}
    assert added["metadata"]["labels"] == ["config"]
    assert added["actor"]["process"]["pid"] == 4242
    mod = render(KINDS["fim-modified"])
    assert mod["activity_id"] == 3 and mod["file_diff"].startswith("--- a")
    scan = render(KINDS["fim-modified-scan"])
    assert scan["actor"] == {"invoked_by": "unknown"} and "file_diff" not in scan
    assert render(KINDS["fim-deleted"])["activity_id"] == 4
    ren = render(KINDS["fim-renamed"])
    assert (ren["activity_id"], ren["file"]["path"], ren["file_result"]["path"]) == (
        5, "/etc/app.conf", "/etc/new.conf")
    assert render(KINDS["fim-chmod"])["activity_id"] == 7
    assert render(KINDS["fim-mtime"])["activity_id"] == 6
    base = render(KINDS["fim-baseline"])
    assert (base["class_uid"], base["activity_id"], base["num_files"]) == (6007, 2, 12)
    assert base["scan"]["name"] == "initial-scan of /etc" and base["duration"] == 250
    inc = render(KINDS["fim-incomplete"])
    assert (inc["status_id"], inc["num_skipped_items"]) == (2, 3)
    assert inc["scan"]["type_id"] == 2
    failed = render(KINDS["fim-failed"])
    assert failed["activity_id"] == 6 and failed["status_detail"] == "OSError: boom"


def test_detection_finding() -> None:
    doc = render(KINDS["alert"])
    assert (doc["class_uid"], doc["activity_id"], doc["type_uid"]) == (2004, 1, 200401)
    assert (doc["severity_id"], doc["severity"]) == (4, "High")
    info = doc["finding_info"]
    assert info["title"] == "Curl in a pipe to a shell"
    assert info["analytic"]["uid"] == "0c5a1b2c-3d4e-4f50-8a6b-7c8d9e0f1a2b"
    assert info["attacks"] == [
        {"tactic": {"name": "Execution", "uid": "TA0002"}},
        {"technique": {"uid": "T1059", "name": "Command and Scripting Interpreter"},
         "sub_technique": {"uid": "T1059.004", "name": "Unix Shell"}}]
    assert info["first_seen_time"] == (T - 5 * 10**9) // 1_000_000
    evidence = doc["evidences"][0]
    assert evidence["process"]["pid"] == 5000
    assert evidence["process"]["file"]["hashes"][0]["value"] == SHA
    assert doc["actor"]["process"]["pid"] == 4000
    assert doc["unmapped"]["event"]["type_uid"] == 100701
    assert doc["unmapped"]["vigil"]["rule"]["source"] == "rules/x.yml:3"
    assert render(KINDS["alert"])["finding_info"]["uid"] == info["uid"]   # stable
    rep = render(KINDS["alert-repeat"])
    assert (rep["activity_id"], rep["severity_id"]) == (2, 3)
    assert rep["finding_info"]["related_events_count"] == 4
    assert rep["finding_info"]["uid"] != info["uid"]
    corr = render(KINDS["alert-correlation"])
    assert corr["severity_id"] == 5
    assert corr["evidences"] == [{"data": {"group": {"user.name": "alice"},
                                           "related": [{"process.pid": "5000"}]}}]


def test_an_unknown_kind_is_a_base_event() -> None:
    """A kind without a mapping (a future dataset) is still valid OCSF, nothing dropped."""
    doc = ocsf_from_ecs({"@timestamp": "2023-11-14T22:13:20.123456Z",
                         "event": {"dataset": "vigil.future", "action": "new-thing"},
                         "something": {"x": 1}, "vigil": {"y": 2}}, T, HOST)
    assert_valid(doc)
    assert (doc["class_uid"], doc["activity_id"], doc["activity_name"]) == (0, 99, "new-thing")
    assert doc["unmapped"]["something"] == {"x": 1} and doc["unmapped"]["vigil"] == {"y": 2}


def test_rendering_changes_no_shared_document() -> None:
    """ECS documents are shared between readers (vigil.outputs.batch): OCSF reads them only,
    and its own shared parts (actor, device) stay as they were across renderings."""
    events = list(KINDS.values())
    batch = Batch(events, HOST)
    before = copy.deepcopy(batch.docs())
    first = copy.deepcopy(ocsf_documents(list(events), HOST))
    again = ocsf_documents(batch, HOST)
    assert batch.docs() == before
    assert again == first
    assert ocsf_documents(batch, HOST) is again       # a second OCSF sink: the same documents


def test_a_burst_shares_the_actor() -> None:
    p = proc()
    docs = ocsf_documents(Batch([FileEvent(T + i, FileOp.MODIFY, b"/srv/w/%d" % i, p)
                                 for i in range(3)], HOST), HOST)
    assert docs[0]["actor"] is docs[1]["actor"] is docs[2]["actor"]
    assert [d["file"]["name"] for d in docs] == ["0", "1", "2"]


def _sink_output(tmp_path: Path, events: list[Output], **kw: Any) -> bytes:
    path = tmp_path / f"out-{kw.get('fmt', 'default')}.jsonl"
    sink = JsonLinesSink.to_file(path, **kw)
    try:
        sink.emit(Batch(events, HOST))
    finally:
        sink.close()
    return path.read_bytes()


def test_jsonl_sink_ecs_unchanged_and_ocsf_on_request(tmp_path: Path) -> None:
    events = list(KINDS.values())
    nl = orjson.OPT_APPEND_NEWLINE
    ecs_bytes = b"".join(orjson.dumps(d, option=nl) for d in ecs_documents(events, HOST))
    assert _sink_output(tmp_path, events) == ecs_bytes
    assert _sink_output(tmp_path, events, fmt="ecs") == ecs_bytes
    lines = _sink_output(tmp_path, events, fmt="ocsf").splitlines()
    assert len(lines) == len(events)
    for line in lines:
        assert_valid(orjson.loads(line))
    assert oct(os.stat(tmp_path / "out-ocsf.jsonl").st_mode & 0o777) == "0o600"


def test_jsonl_sink_refuses_an_unknown_format(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown output format 'xml'"):
        JsonLinesSink.to_file(tmp_path / "x", fmt="xml")
    assert not (tmp_path / "x").exists()


def test_container_and_pod() -> None:
    """The ECS container/orchestrator fields (vigil.enrich.containers.ecs_fields) in OCSF's
    process.container; what OCSF has no place for under unmapped."""
    from vigil.enrich.containers import ContainerInfo, ecs_fields

    info = ContainerInfo("c" * 64, "containerd", name="web", image_name="nginx:1.27",
                         pod_name="web-0", pod_uid="0b7c3a52-5f3e-4d7e-9a41-2f8e0c9d1b6a",
                         namespace="prod")
    doc = {**ecs_document(KINDS["file-create"], HOST), **ecs_fields(info)}
    out = ocsf_from_ecs(doc, T, HOST)
    assert_valid(out)
    assert out["actor"]["process"]["container"] == {
        "uid": "c" * 64, "name": "web", "runtime": "containerd", "orchestrator": "kubernetes",
        "pod_uuid": "0b7c3a52-5f3e-4d7e-9a41-2f8e0c9d1b6a"}
    assert out["unmapped"]["container"] == {"image": {"name": "nginx:1.27"}}
    assert out["unmapped"]["orchestrator"]["namespace"] == "prod"
