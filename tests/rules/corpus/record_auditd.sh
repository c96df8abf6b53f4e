#!/bin/bash
# Records tests/rules/corpus/auditd_events.jsonl: real commands run under
# `vigil run -o json --no-fim --no-rules`, for the auditd rules' part of the differential test.
# Run as root from the checkout's root: tests/rules/corpus/record_auditd.sh [OUT]
#
# - Scratch files live in /tmp/vigil-rec (watched). Tools this host lacks, and the ones that
#   must not really run (shutdown, sysctl -w, iptables, ...), are stand-ins: copies of `true`
#   in /var/tmp/vigil-rec-stubs, first on PATH; what the rules read (argv, the process's name)
#   is still what a real run of the tool would show.
# - Changes to system files happen in a private mount namespace: /etc is an overlay whose upper
#   layer is scratch, /home and /run are empty tmpfs; the host's files are never touched.
# - Only events of this script's process tree are kept (by pid and parent pid), without host
#   fields and without exits.
set -u
OUT=${1:-tests/rules/corpus/auditd_events.jsonl}
W=/tmp/vigil-rec
S=/var/tmp/vigil-rec-stubs
OV=/tmp/vigil-rec-ov
rm -rf "$W" "$S" "$OV"
mkdir -p "$W" "$S" "$OV/u" "$OV/w"
for t in iptables getcap xclip xmrig nft ufw firewall-cmd tcpdump tshark import xwd steghide \
         shutdown init arecord sysctl kmod insmod; do
    cp /usr/bin/true "$S/$t"
done

.venv/bin/vigil run -o json --no-fim --no-rules --watch /etc --watch /home --watch /run \
    --watch "$W" > "$W.jsonl" 2> "$W.err" &
VIGIL=$!
for _ in $(seq 60); do grep -q backend "$W.err" 2>/dev/null && break; sleep 1; done
sleep 2

cat > "$W.cmds" <<'EOF'
set -x
export PATH=/var/tmp/vigil-rec-stubs:$PATH
cd /tmp/vigil-rec
echo "db_password=hunter2" > notes.txt
truncate -s 1M pad.bin
dd if=/dev/zero of=/tmp/vigil-rec/zero.bin bs=1k count=1 status=none
dd if=/dev/zero count=1 status=none > /dev/null
iptables -t nat -A PREROUTING -p tcp --dport 443 -j REDIRECT --to-ports 42391
iptables -P INPUT DROP
getcap -r /
touch -t 202001010000 notes.txt
touch -r /etc/hostname notes.txt
chattr -i notes.txt
xclip -selection clipboard -o
xclip -sel clip -t image/png -o
xmrig --cpu-priority=5 -o pool.example:3333
zip -q notes.zip notes.txt
gzip -k notes.txt
tar -cf notes.tar notes.txt
tar -tf notes.tar
wget --post-file=/tmp/vigil-rec/notes.txt -q --tries=1 --timeout=1 http://127.0.0.1:9/
chmod 777 notes.txt
chmod u+s notes.txt
chmod 644 notes.txt
chown root notes.txt
grep -r password /tmp/vigil-rec
grep root /etc/hostname
mkdir .hidden
touch .hidden/.x
mkdir visible
cp notes.zip img.jpg
cat img.jpg notes.zip > /dev/null
cat notes.txt
cp /bin/sh /tmp/vigil-rec/crond
cp notes.txt notes.bak
nft flush ruleset
ufw delete 1
firewall-cmd --remove-port=22/tcp
tcpdump -c 10 -i eth0
tshark -c 10 -i eth0
import -window root /tmp/vigil-rec/screen.png
xwd -root -out /tmp/vigil-rec/screen.xwd
steghide embed -cf img.jpg -ef notes.txt
steghide extract -sf img.jpg
touch .bash_history
cat .bash_history
systemctl restart vigil-nonexistent.service
systemctl status vigil-nonexistent.service
shutdown -h now
init 6
unzip img.png
unzip -l notes.zip
hostname
id
uname -a
whoami
who
last -n 1
uptime
env > /dev/null
ls -la /tmp/vigil-rec
arecord -vv -fdat /tmp/vigil-rec/a.wav
sysctl -w kernel.randomize_va_space=0
sysctl kernel.randomize_va_space
chage -l root
passwd -S root
grep -c vbox /proc/cpuinfo
kmod list
insmod
split -b 10 notes.txt part-
useradd --help > /dev/null
cp /usr/bin/true /tmp/vigil-rec/payload
/tmp/vigil-rec/payload
mkdir -p .hidden/bin
cp /usr/bin/true .hidden/bin/run
.hidden/bin/run
mknod fifo p
ln -s notes.txt link
ln notes.txt hard
mv notes.bak notes.old
rm notes.old part-aa
rmdir visible
setpriv --reuid=33 --regid=33 --clear-groups id
setpriv --reuid=33 --regid=33 --clear-groups touch /tmp/vigil-rec/denied || true
chmod 700 /tmp/vigil-rec/.hidden
setpriv --reuid=33 --regid=33 --clear-groups touch /tmp/vigil-rec/.hidden/denied || true
unshare -m --propagation private bash -xc '
    mount -t overlay overlay -o lowerdir=/etc,upperdir=/tmp/vigil-rec-ov/u,workdir=/tmp/vigil-rec-ov/w /etc
    mount -t tmpfs tmpfs /home
    mount -t tmpfs tmpfs /run
    mkdir -p /etc/audit
    echo "-w /etc/shadow -p wa" >> /etc/audit/audit.rules
    touch /etc/ld.so.preload
    rm /etc/ld.so.preload
    echo "# x" >> /etc/rsyslog.conf
    echo "kernel.sysrq = 1" >> /etc/sysctl.conf
    touch /etc/issue
    mkdir -p /etc/systemd/system
    printf "[Service]\nExecStart=/bin/true\n" > /etc/systemd/system/vigil-test.service
    mv /etc/systemd/system/vigil-test.service /etc/systemd/system/vigil-test2.service
    rm /etc/systemd/system/vigil-test2.service
    mkdir -p /etc/profile.d
    echo "true" >> /etc/profile.d/vigil.sh
    mkdir -p /home/alice/.config/systemd/user
    echo "alias ll=ls" >> /home/alice/.bashrc
    touch /home/alice/.config/systemd/user/evil.service
    touch /home/alice/notes.txt
    mkdir -p /etc/pam.d
    echo "auth required pam_unix.so" >> /etc/pam.d/system-auth
    touch /etc/login.defs
    touch /var/run/haldrund.pid
    touch /etc/vigil-benign.conf
    chmod 600 /etc/vigil-benign.conf
    rm /etc/vigil-benign.conf
    setpriv --reuid=33 --regid=33 --clear-groups touch /etc/ld.so.preload || true
    setpriv --reuid=33 --regid=33 --clear-groups rm -f /etc/issue || true
'
EOF
bash "$W.cmds" > "$W.cmds.log" 2>&1 &
ROOT=$!
wait $ROOT
sleep 3
kill -INT $VIGIL
wait $VIGIL

.venv/bin/python - "$W.jsonl" "$ROOT" "$OUT" <<'EOF'
import json, sys
src, root, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
tree = {root}
kept = []
for line in open(src, encoding="utf-8"):
    doc = json.loads(line)
    p = doc.get("process") or {}
    pid, ppid = p.get("pid"), (p.get("parent") or {}).get("pid")
    if pid in tree or ppid in tree:
        tree.add(pid)
        if doc["event"].get("action") == "exit":
            continue   # no auditd record; bulk
        doc.pop("host", None)
        kept.append(json.dumps(doc, ensure_ascii=False, separators=(",", ":")))
open(out, "w", encoding="utf-8").write("\n".join(kept) + "\n")
print(f"{len(kept)} events of {len(tree)} processes -> {out}")
EOF
rm -rf "$S" "$OV"
