"""MITRE ATT&CK names for a rule's ``attack.*`` tags, as ECS ``threat.*`` fields want them.

Owns reading Sigma's ATT&CK tags (the Sigma tags appendix: ``attack.<tactic>``,
``attack.tNNNN[.NNN]``, groups and software) and the names Vigil knows for them. Tactic names
come from the tag itself (``defense-evasion`` -> "Defense Evasion"); technique names from a
table of the techniques the shipped rules cite (written here from the ATT&CK matrix; a
technique Vigil has no name for is reported by id only, never with a guessed name).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Final

FRAMEWORK: Final = "MITRE ATT&CK"

_TACTIC_IDS: Final = {
    "reconnaissance": "TA0043", "resource-development": "TA0042", "initial-access": "TA0001",
    "execution": "TA0002", "persistence": "TA0003", "privilege-escalation": "TA0004",
    "defense-evasion": "TA0005", "credential-access": "TA0006", "discovery": "TA0007",
    "lateral-movement": "TA0008", "collection": "TA0009", "exfiltration": "TA0010",
    "command-and-control": "TA0011", "impact": "TA0040",
}
_SMALL_WORDS: Final = frozenset({"and", "or", "of", "the"})

TECHNIQUES: Final = {
    "T1003": "OS Credential Dumping", "T1005": "Data from Local System",
    "T1007": "System Service Discovery", "T1014": "Rootkit",
    "T1016": "System Network Configuration Discovery", "T1018": "Remote System Discovery",
    "T1027": "Obfuscated Files or Information", "T1030": "Data Transfer Size Limits",
    "T1033": "System Owner/User Discovery", "T1036": "Masquerading",
    "T1040": "Network Sniffing", "T1046": "Network Service Discovery",
    "T1048": "Exfiltration Over Alternative Protocol",
    "T1049": "System Network Connections Discovery", "T1053": "Scheduled Task/Job",
    "T1055": "Process Injection", "T1056": "Input Capture", "T1057": "Process Discovery",
    "T1059": "Command and Scripting Interpreter",
    "T1068": "Exploitation for Privilege Escalation", "T1069": "Permission Groups Discovery",
    "T1070": "Indicator Removal", "T1071": "Application Layer Protocol",
    "T1082": "System Information Discovery", "T1083": "File and Directory Discovery",
    "T1087": "Account Discovery", "T1090": "Proxy", "T1098": "Account Manipulation",
    "T1102": "Web Service", "T1105": "Ingress Tool Transfer", "T1106": "Native API",
    "T1113": "Screen Capture", "T1115": "Clipboard Data", "T1123": "Audio Capture",
    "T1133": "External Remote Services", "T1136": "Create Account",
    "T1140": "Deobfuscate/Decode Files or Information",
    "T1190": "Exploit Public-Facing Application", "T1201": "Password Policy Discovery",
    "T1203": "Exploitation for Client Execution", "T1204": "User Execution",
    "T1212": "Exploitation for Credential Access", "T1219": "Remote Access Tools",
    "T1222": "File and Directory Permissions Modification", "T1485": "Data Destruction",
    "T1489": "Service Stop", "T1496": "Resource Hijacking",
    "T1499": "Endpoint Denial of Service", "T1505": "Server Software Component",
    "T1518": "Software Discovery", "T1529": "System Shutdown/Reboot",
    "T1531": "Account Access Removal", "T1543": "Create or Modify System Process",
    "T1546": "Event Triggered Execution", "T1547": "Boot or Logon Autostart Execution",
    "T1548": "Abuse Elevation Control Mechanism", "T1552": "Unsecured Credentials",
    "T1553": "Subvert Trust Controls", "T1554": "Compromise Host Software Binary",
    "T1560": "Archive Collected Data", "T1562": "Impair Defenses",
    "T1564": "Hide Artifacts", "T1565": "Data Manipulation",
    "T1567": "Exfiltration Over Web Service", "T1568": "Dynamic Resolution",
    "T1571": "Non-Standard Port", "T1572": "Protocol Tunneling",
    "T1574": "Hijack Execution Flow", "T1584": "Compromise Infrastructure",
    "T1587": "Develop Capabilities", "T1588": "Obtain Capabilities",
    "T1592": "Gather Victim Host Information", "T1593": "Search Open Websites/Domains",
    "T1620": "Reflective Code Loading", "T1653": "Power Settings",
    # sub-techniques
    "T1027.001": "Binary Padding", "T1027.003": "Steganography",
    "T1027.010": "Command Obfuscation", "T1027.011": "Fileless Storage",
    "T1036.003": "Rename System Utilities", "T1048.003":
    "Exfiltration Over Unencrypted Non-C2 Protocol", "T1053.002": "At", "T1053.003": "Cron",
    "T1055.009": "Proc Memory", "T1056.001": "Keylogging", "T1059.004": "Unix Shell",
    "T1059.006": "Python", "T1069.001": "Local Groups", "T1070.002":
    "Clear Linux or Mac System Logs", "T1070.003": "Clear Command History",
    "T1070.004": "File Deletion", "T1070.006": "Timestomp", "T1071.001": "Web Protocols",
    "T1087.001": "Local Account", "T1098.004": "SSH Authorized Keys", "T1136.001": "Local Account",
    "T1204.001": "Malicious Link", "T1222.002": "Linux and Mac File and Directory Permissions "
    "Modification", "T1505.003": "Web Shell", "T1518.001": "Security Software Discovery",
    "T1543.002": "Systemd Service", "T1546.004": "Unix Shell Configuration Modification",
    "T1547.006": "Kernel Modules and Extensions", "T1548.001": "Setuid and Setgid",
    "T1548.003": "Sudo and Sudo Caching", "T1552.001": "Credentials In Files",
    "T1552.003": "Bash History", "T1553.004": "Install Root Certificate",
    "T1560.001": "Archive via Utility", "T1562.001": "Disable or Modify Tools",
    "T1564.001": "Hidden Files and Directories",
    "T1565.001": "Stored Data Manipulation", "T1568.002": "Domain Generation Algorithms",
    "T1574.006": "Dynamic Linker Hijacking", "T1588.001": "Malware",
    "T1592.004": "Client Configurations",
}

_TECHNIQUE: Final = re.compile(r"^t(\d{4})(?:\.(\d{3}))?$")
_OTHER: Final = re.compile(r"^[gs]\d{4}$")   # groups, software: not ECS threat fields


@dataclass
class Threat:
    """The ECS ``threat`` object of one rule."""

    tactics: list[str] = field(default_factory=list)         # names, tag order
    tactic_ids: list[str] = field(default_factory=list)
    techniques: list[str] = field(default_factory=list)      # Tnnnn
    subtechniques: list[str] = field(default_factory=list)   # Tnnnn.nnn

    def to_ecs(self) -> dict[str, Any] | None:
        if not (self.tactics or self.techniques):
            return None
        out: dict[str, Any] = {"framework": FRAMEWORK}
        if self.tactics:
            out["tactic"] = {"name": self.tactics}
            if self.tactic_ids:
                out["tactic"]["id"] = self.tactic_ids
        if self.techniques:
            tech: dict[str, Any] = {"id": self.techniques}
            names = [TECHNIQUES[t] for t in self.techniques if t in TECHNIQUES]
            if len(names) == len(self.techniques):
                tech["name"] = names
            if self.subtechniques:
                sub: dict[str, Any] = {"id": self.subtechniques}
                sub_names = [TECHNIQUES[t] for t in self.subtechniques if t in TECHNIQUES]
                if len(sub_names) == len(self.subtechniques):
                    sub["name"] = sub_names
                tech["subtechnique"] = sub
            out["technique"] = tech
        return out


def tactic_name(tag: str) -> str:
    """``command-and-control`` -> "Command and Control"."""
    words = tag.replace("_", "-").split("-")
    return " ".join(w if (i and w in _SMALL_WORDS) else w.capitalize()
                    for i, w in enumerate(words))


def threat(tags: tuple[str, ...] | list[str]) -> Threat:
    out = Threat()
    for tag in tags:
        ns, _, rest = tag.lower().partition(".")
        if ns != "attack" or not rest or _OTHER.match(rest):
            continue
        m = _TECHNIQUE.match(rest)
        if m:
            tech = f"T{m.group(1)}"
            if tech not in out.techniques:
                out.techniques.append(tech)
            if m.group(2) and (sub := f"{tech}.{m.group(2)}") not in out.subtechniques:
                out.subtechniques.append(sub)
            continue
        name = tactic_name(rest)
        if name not in out.tactics:
            out.tactics.append(name)
            if (tid := _TACTIC_IDS.get(rest.replace("_", "-"))) is not None:
                out.tactic_ids.append(tid)
    if len(out.tactic_ids) != len(out.tactics):
        out.tactic_ids = []   # ids only when every tactic has one: the lists stay parallel
    return out
