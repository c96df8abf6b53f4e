"""SigmaHQ's ``file_event`` rules of the built-in pack, each fired by real file operations of
real tools under the real agent, and each shown silent for a real benign look-alike.

What is proven, per rule: a real program (tee, touch, cp, wget) creating or writing a file
raises THAT rule's alert in ``vigil run``'s stream, naming the acting process (pid,
executable) and the file; and the look-alikes, the same kind of program writing a file the
rule must leave alone (a near name, the file the rule's own filter excludes, another
downloader), reach the agent as file events and raise no alert of the rule.

Nothing real is touched. Rules whose paths name system files (``/etc/sudoers.d/``, the cron
directories) run as copies with those paths moved onto a scratch root R
(pack_steps.rule_files, test_pack_vigil.rewrite_rule); the other six run from their shipped
files, unchanged: their ``endswith``/``contains`` paths (``/etc/doas.conf``,
``/etc/profile.d/``, ``ebpfbackdoor``, ``{echo``) hold under R or a scratch directory T in /tmp,
both configured directories (such rules fire on configured directories only: ``vigil rules
check`` says so), and their ``/tmp`` paths are harmless: ``/tmp/rootlog`` (made here, after
checking it does not exist, and removed) and wget's downloads into /tmp and /var/tmp, which
the agent watches for those rules alone (rule-driven watching: no telemetry of them, which a
test checks). wget talks only to an HTTP server this test runs on 127.0.0.1; its look-alikes
are wget saving into a configured directory D in /run and Python's urllib saving into T.

The sudoers rule's look-alike is the case its own filter names, dpkg unpacking a package's
/etc/sudoers.d/README: that file (README.dpkg-new) raises no alert, but the rename onto README
that follows does, so the look-alike test of that rule is an expected failure
(``PRODUCT_BUGS``) until Vigil keeps renames out of ``file_event`` or the lead decides
otherwise.

One agent serves the module (these eight rules only, no suppression); every trigger and
look-alike runs first, then one barrier, then the per-rule tests read the stream. A test checks
that every file_event rule of the pack has its case.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from agent_proc import CHILD_PY, get
from pack_steps import (
    Case,
    PackRun,
    Step,
    alert_of,
    alerts_for,
    assert_silent,
    pack_run,
    rule_files,
    seen_by_agent,
    tee,
)
from test_pack_vigil import _populate, build_deb

from vigil.rules.loader import builtin_rules_dir

pytestmark = [pytest.mark.root]

RULES_DIR = builtin_rules_dir() / "sigmahq" / "linux" / "file_event"
ALL_STEMS = sorted(p.stem for p in RULES_DIR.glob("*.yml"))

DOAS = "file_event_lnx_doas_conf_creation"
SUDOERS = "file_event_lnx_persistence_sudoers_files"
CRON = "file_event_lnx_susp_cron_file_created"
BASE64 = "file_event_lnx_susp_filename_with_embedded_base64_command"
PROFILE = "file_event_lnx_susp_shell_script_under_profile_directory"
ROOTLOG = "file_event_lnx_triple_cross_rootkit_lock_file"
BACKDOOR = "file_event_lnx_triple_cross_rootkit_persistence"
WGET_TMP = "file_event_lnx_wget_download_file_in_tmp_dir"
MOVED = {SUDOERS, CRON}   # loaded as copies moved onto R; the others as shipped

TOUCH, CP, WGET = "/usr/bin/touch", "/usr/bin/cp", "/usr/bin/wget"
ROOTLOG_PATH = "/tmp/rootlog"
PAYLOAD = b"#!/bin/sh\necho vigil test payload\n"
# A downloader that is not wget: Python's urllib, proxies ignored (loopback only).
PY_FETCH = ("import sys, urllib.request as u\n"
            "data = u.build_opener(u.ProxyHandler({})).open(sys.argv[1], timeout=10).read()\n"
            "open(sys.argv[2], 'wb').write(data)\n")
README_DEB = "vigil-sudoers-readme"


def wget(path: str) -> Step:
    """wget saving the loopback server's payload as ``path``."""
    return Step((WGET, "-q", "--no-hsts", "--no-proxy", "--tries=1", "--timeout=10",
                 "-O", path, "{url}/payload.sh"), path=path)


JOB = "* * * * * root /tmp/.x\n"
# {R}: the scratch root (in /var/tmp); {T}: a configured scratch directory in /tmp, {D} one
# in /run; {run}: a name of this run's own; {url}: the loopback server; {work}: unwatched
# staging.
CASES: dict[str, Case] = {
    DOAS: Case(
        (tee("{R}/etc/doas.conf", "permit nopass keepenv :wheel\n"),),
        # a user's draft of the file in their home
        (tee("{R}/home/alice/doas.conf", "permit persist :wheel\n"),)),
    SUDOERS: Case(
        (tee("{R}/etc/sudoers.d/99-vigil", "intruder ALL=(ALL) NOPASSWD: ALL\n"),),
        # the rule's own filter: dpkg unpacking a package's /etc/sudoers.d/README
        # (its log kept out of the real /var/log/dpkg.log)
        (Step(("/usr/bin/dpkg", "--root={R}", "--force-script-chrootless",
               "--log={work}/dpkg.log", "-i", f"{{work}}/{README_DEB}.deb"),
              path="{R}/etc/sudoers.d/README.dpkg-new"),)),
    CRON: Case(
        (tee("{R}/etc/cron.d/vigil-job", JOB),
         tee("{R}/etc/crontab", JOB, append=True),
         Step((CP, "{work}/job", "{R}/var/spool/cron/crontabs/root"),
              path="{R}/var/spool/cron/crontabs/root")),
        # the names the rule's filter leaves out: packaged daily jobs, busybox's crontab
        (tee("{R}/etc/cron.daily/apt", "#!/bin/sh\n# apt's daily job\n"),
         tee("{R}/etc/crontabs/root", "# busybox crontab\n"))),
    BASE64: Case(
        (Step((TOUCH, "{T}/{echo,Y2F0IC9ldGMvc2hhZG93Cg==}|{base64,-d}|bash"),
              path="{T}/{echo,Y2F0IC9ldGMvc2hhZG93Cg==}|{base64,-d}|bash"),),
        (Step((TOUCH, "{T}/echo-base64-d.txt"), path="{T}/echo-base64-d.txt"),)),
    PROFILE: Case(
        (tee("{R}/etc/profile.d/vigil-evil.sh", "echo pwned\n"),),
        (tee("{R}/etc/profile", "# local\n", append=True),
         tee("{R}/etc/profile.d/README", "what these scripts do\n"))),
    ROOTLOG: Case(
        (Step((TOUCH, ROOTLOG_PATH), path=ROOTLOG_PATH),),
        # the same name in another directory of /tmp
        (Step((TOUCH, "{T}/rootlog"), path="{T}/rootlog"),)),
    BACKDOOR: Case(
        (Step((CP, "/usr/bin/true", "{T}/ebpfbackdoor"), path="{T}/ebpfbackdoor"),),
        # someone's reading notes on the rootkit
        (tee("{T}/ebpfbackdoor.c", "/* Triple Cross: how its persistence works */\n"),)),
    WGET_TMP: Case(
        (wget("/tmp/{run}.sh"), wget("/var/tmp/{run}.sh")),
        # wget saving outside /tmp and /var/tmp; another downloader saving into /tmp
        (wget("{D}/payload.sh"),
         Step((CHILD_PY, "-c", PY_FETCH, "{url}/payload.sh", "{T}/payload.sh"),
              path="{T}/payload.sh"))),
}

# rule file stem -> the product behaviour that keeps its look-alike from staying silent
# (xfail, strict: once fixed, the entry must go).
PRODUCT_BUGS: dict[str, str] = {
    SUDOERS: "dpkg unpacks /etc/sudoers.d/README as README.dpkg-new, which the rule's filter "
             "leaves out (no alert: test_dpkg_new_file_is_left_out), then renames it onto "
             "README; Vigil feeds renames to file_event with TargetFilename the new name "
             "(README: 'created/modified/renamed/linked -> file_event'), where SigmaHQ keeps "
             "them apart (file_rename: Sysmon's FileCreate has no renames), so the rename "
             "alerts and the filter cannot keep the package manager out",
}


def _params(bugs: bool = False) -> list[object]:
    return [pytest.param(s, id=s.removeprefix("file_event_lnx_"),
                         marks=[pytest.mark.xfail(reason=PRODUCT_BUGS[s], strict=True)]
                         if bugs and s in PRODUCT_BUGS else [])
            for s in ALL_STEMS]


# ---------------------------------------------------------------------------------------------
# The loopback download server


class _Payload(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(PAYLOAD)))
        self.end_headers()
        self.wfile.write(PAYLOAD)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def loopback_server() -> Iterator[str]:
    """An HTTP server on 127.0.0.1 answering every GET with PAYLOAD; yields its URL."""
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Payload)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}"
    finally:
        srv.shutdown()
        srv.server_close()
        t.join(10)


# ---------------------------------------------------------------------------------------------
# The run


def _scratch_root(r: Path, work: Path) -> None:
    """R as test_pack_vigil populates it (etc, the cron and profile directories, dpkg's
    database), the directories this module's cases add, and the staging files."""
    _populate(r)
    for d in ("etc/crontabs", "var/spool/cron/crontabs"):
        (r / d).mkdir(parents=True, exist_ok=True)
    (work / "job").write_text(JOB)
    build_deb(work, README_DEB, {"/etc/sudoers.d/README": (b"# drop-ins go here\n", 0o440)})


@pytest.fixture(scope="module")
def run() -> Iterator[PackRun]:
    if os.geteuid() != 0:
        pytest.skip("needs root: runs the real eBPF agent")
    assert os.path.exists(WGET), f"{WGET} missing: install Debian's wget"
    assert not os.path.lexists(ROOTLOG_PATH), \
        f"{ROOTLOG_PATH} exists: Triple Cross's lock file, or a leftover; remove it first"
    base = Path(tempfile.mkdtemp(prefix="vigil-sigmahq-file-", dir="/var/tmp")).resolve()
    tdir, ddir = (Path(tempfile.mkdtemp(prefix="vigil-sigmahq-file-", dir=d)).resolve()
                  for d in ("/tmp", "/run"))
    places = {"R": str(base / "root"), "T": str(tdir), "D": str(ddir),
              "work": str(base / "work"), "run": base.name}
    made = [Path(ROOTLOG_PATH), Path(f"/tmp/{base.name}.sh"), Path(f"/var/tmp/{base.name}.sh")]
    try:
        for d in (base, tdir, ddir):
            d.chmod(0o755)
        root, probe, work = base / "root", base / "w", base / "work"
        for d in (root, probe, work):
            d.mkdir()
        _scratch_root(root, work)
        files = rule_files(sorted(RULES_DIR.glob("*.yml")), root, base / "rules")
        with loopback_server() as url:
            places["url"] = url
            with pack_run(base, [root, tdir, ddir], files, probe, CASES, places) as r:
                yield r
    finally:
        for p in made:
            p.unlink(missing_ok=True)
        for d in (base, tdir, ddir):
            shutil.rmtree(d, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# The tests


def test_every_file_event_rule_has_a_case() -> None:
    assert len(ALL_STEMS) == 8
    assert sorted(CASES) == ALL_STEMS
    assert set(PRODUCT_BUGS) <= set(ALL_STEMS)
    for case in CASES.values():
        assert case.triggers and case.look_alikes
        assert all(s.path is not None for s in (*case.triggers, *case.look_alikes))


def test_only_rules_naming_system_files_are_moved(tmp_path: Path) -> None:
    files = rule_files(sorted(RULES_DIR.glob("*.yml")), tmp_path / "root", tmp_path / "rules")
    moved = {f.stem for f in files if not f.is_relative_to(RULES_DIR)}
    assert moved == MOVED
    text = (tmp_path / "rules" / f"{SUDOERS}.yml").read_text()
    assert f"{tmp_path}/root/etc/sudoers.d/README.dpkg-new" in text   # the filter moves too


@pytest.mark.parametrize("stem", _params())
def test_rule_fires_on_real_file_operations(run: PackRun, stem: str) -> None:
    for ran in run.triggers[stem]:
        a = alert_of(run.agent, run.rules[stem], ran, "file_event")
        assert get(a, "user.name") == "root"


def test_wget_downloaded_from_the_loopback_server(run: PackRun) -> None:
    for ran in run.triggers[WGET_TMP] + run.look_alikes[WGET_TMP]:
        assert ran.path is not None and Path(ran.path).read_bytes() == PAYLOAD


@pytest.mark.parametrize("stem", _params(bugs=True))
def test_look_alike_does_not_fire(run: PackRun, stem: str) -> None:
    for ran in run.look_alikes[stem]:
        assert_silent(run.agent, run.rules[stem], ran)


def test_dpkg_new_file_is_left_out(run: PackRun) -> None:
    """The case the sudoers rule's filter names: dpkg creating README.dpkg-new."""
    rule = run.rules[SUDOERS]
    (ran,) = run.look_alikes[SUDOERS]
    seen_by_agent(run.agent, ran)
    assert ran.child.exe == "/usr/bin/dpkg"
    assert not [a for a in alerts_for(run.agent, rule, ran.child.pid)
                if get(a, "file.path") == ran.path]


def test_rule_driven_paths_are_not_telemetry(run: PackRun) -> None:
    """/tmp/rootlog and wget's downloads straight into /tmp and /var/tmp reach the rules
    only (the agent watches them for the rules alone): no event of them is reported."""
    paths = {ran.path for ran in run.triggers[ROOTLOG] + run.triggers[WGET_TMP]}
    assert paths == {ROOTLOG_PATH, *(f"{d}/{run.places['run']}.sh" for d in ("/tmp", "/var/tmp"))}
    assert not [e for e in run.agent.events if get(e, "file.path") in paths]
