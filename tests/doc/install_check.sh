#!/bin/bash
# `make install` and `make uninstall` into temporary DESTDIRs:
#   1. the default PREFIX installs exactly the expected files, with the
#      expected modes, the unit's paths rewritten, and the installed binary
#      accepts the installed example config (-t);
#   2. a second install keeps an edited config and puts the new example next
#      to it as switchyard.conf.example;
#   3. uninstall removes everything but the edited config; PURGE=1 that too,
#      leaving no file and no switchyard config directory;
#   4. PREFIX=/usr (as packagers and images use it) puts the config under /etc;
#   5. systemd-analyze verify is clean on the installed unit, where systemd is
#      installed (the unit's commands pointed into the DESTDIR, man pages
#      looked up there).
# Run from the top of the tree by `make install-check`; MAKE is the make to use.
set -euo pipefail
MAKE=${MAKE:-make}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0
ok() { echo "PASS $*"; }
bad() { echo "FAIL $*"; fails=$((fails + 1)); }
# every file and symlink under a DESTDIR, relative, sorted
files() { (cd "$1" && find . \( -type f -o -type l \) | sed 's,^\./,,' | LC_ALL=C sort); }
mode() { stat -c %a "$1"; }

# ---- 1. a fresh install, default PREFIX=/usr/local ----
d=$tmp/local
$MAKE -s --no-print-directory install DESTDIR="$d" > "$tmp/install1.out"
expected="usr/local/etc/switchyard/switchyard.conf
usr/local/lib/systemd/system/switchyard.service
usr/local/sbin/switchyard
usr/local/share/man/man5/switchyard.conf.5
usr/local/share/man/man8/switchyard.8"
if [ "$(files "$d")" = "$expected" ]; then ok "install: exactly the 5 expected files"
else bad "install: files differ from the expected list:"; diff <(echo "$expected") <(files "$d") || true; fi
conf=$d/usr/local/etc/switchyard/switchyard.conf
unit=$d/usr/local/lib/systemd/system/switchyard.service
want_modes="755 644 644 644 644"
got_modes="$(mode "$d/usr/local/sbin/switchyard") $(mode "$conf") $(mode "$unit") \
$(mode "$d/usr/local/share/man/man5/switchyard.conf.5") $(mode "$d/usr/local/share/man/man8/switchyard.8")"
[ "$got_modes" = "$want_modes" ] && ok "install: modes $got_modes" || bad "install: modes $got_modes, want $want_modes"
cmp -s etc/switchyard.conf "$conf" && ok "install: the config is etc/switchyard.conf" \
	|| bad "install: the config differs from etc/switchyard.conf"
if grep -qx 'ExecStart=/usr/local/sbin/switchyard -c /usr/local/etc/switchyard/switchyard.conf' "$unit"
then ok "install: unit runs /usr/local/sbin/switchyard -c /usr/local/etc/switchyard/switchyard.conf"
else bad "install: unexpected ExecStart in the unit: $(grep ExecStart= "$unit")"; fi
if "$d/usr/local/sbin/switchyard" -t -c "$conf" > "$tmp/t.out" 2>&1
then ok "install: the installed binary accepts the installed config"
else bad "install: switchyard -t on the installed config:"; cat "$tmp/t.out"; fi

# ---- 2. a second install keeps an edited config ----
echo '# edited by the operator' >> "$conf"
cp "$conf" "$tmp/edited"
$MAKE -s --no-print-directory install DESTDIR="$d" > "$tmp/install2.out"
cmp -s "$conf" "$tmp/edited" && ok "reinstall: the edited config was kept" \
	|| bad "reinstall: the edited config was overwritten"
cmp -s etc/switchyard.conf "$conf.example" && ok "reinstall: the new example is switchyard.conf.example" \
	|| bad "reinstall: no switchyard.conf.example next to the edited config"
grep -q 'was kept' "$tmp/install2.out" && ok "reinstall: says so: $(grep 'was kept' "$tmp/install2.out")" \
	|| bad "reinstall: does not say that it kept the config"
[ "$(files "$d" | wc -l)" -eq 6 ] && ok "reinstall: 6 files (the 5 and the .example)" \
	|| bad "reinstall: $(files "$d" | wc -l) files"

# ---- 3. uninstall ----
$MAKE -s --no-print-directory uninstall DESTDIR="$d" > "$tmp/uninstall1.out"
if [ "$(files "$d")" = "usr/local/etc/switchyard/switchyard.conf" ] && cmp -s "$conf" "$tmp/edited"
then ok "uninstall: removed everything but the edited config ($(cat "$tmp/uninstall1.out"))"
else bad "uninstall: left $(files "$d" | tr '\n' ' ')"; fi
$MAKE -s --no-print-directory uninstall DESTDIR="$d" PURGE=1 > /dev/null
if [ -z "$(files "$d")" ] && [ ! -e "$d/usr/local/etc/switchyard" ]
then ok "uninstall PURGE=1: no file left, no etc/switchyard directory"
else bad "uninstall PURGE=1: left $(files "$d" | tr '\n' ' ')"; fi
# an unedited config goes without PURGE
$MAKE -s --no-print-directory install DESTDIR="$d" > /dev/null
$MAKE -s --no-print-directory uninstall DESTDIR="$d" > /dev/null
[ -z "$(files "$d")" ] && ok "install + uninstall: no file left" || bad "install + uninstall: left $(files "$d" | tr '\n' ' ')"

# ---- 4. PREFIX=/usr, as packagers and container images use it ----
u=$tmp/usr
$MAKE -s --no-print-directory install DESTDIR="$u" PREFIX=/usr > /dev/null
expected="etc/switchyard/switchyard.conf
usr/lib/systemd/system/switchyard.service
usr/sbin/switchyard
usr/share/man/man5/switchyard.conf.5
usr/share/man/man8/switchyard.8"
if [ "$(files "$u")" = "$expected" ]; then ok "install PREFIX=/usr: config in /etc, the rest under /usr"
else bad "install PREFIX=/usr: files differ:"; diff <(echo "$expected") <(files "$u") || true; fi
if grep -qx 'ExecStart=/usr/sbin/switchyard -c /etc/switchyard/switchyard.conf' "$u/usr/lib/systemd/system/switchyard.service"
then ok "install PREFIX=/usr: unit runs /usr/sbin/switchyard -c /etc/switchyard/switchyard.conf"
else bad "install PREFIX=/usr: ExecStart is $(grep ExecStart= "$u/usr/lib/systemd/system/switchyard.service")"; fi
grep -qE '/usr/local/(sbin|etc)' "$u/usr/lib/systemd/system/switchyard.service" \
	&& bad "install PREFIX=/usr: the unit still names /usr/local/sbin or /usr/local/etc" \
	|| ok "install PREFIX=/usr: no /usr/local path left in the unit"
$MAKE -s --no-print-directory uninstall DESTDIR="$u" PREFIX=/usr > /dev/null
[ -z "$(files "$u")" ] && ok "uninstall PREFIX=/usr: no file left" || bad "uninstall PREFIX=/usr: left $(files "$u" | tr '\n' ' ')"

# ---- 5. systemd-analyze verify ----
if command -v systemd-analyze > /dev/null; then
	v=$tmp/verify
	$MAKE -s --no-print-directory install DESTDIR="$v" > /dev/null
	# verify wants the commands to exist: point them at the DESTDIR copies
	# (the unit's name must stay switchyard.service)
	mkdir -p "$tmp/unit"
	sed -e "s,/usr/local/sbin/switchyard,$v/usr/local/sbin/switchyard,g" \
		-e "s,/usr/local/etc/switchyard/,$v/usr/local/etc/switchyard/,g" \
		"$v/usr/local/lib/systemd/system/switchyard.service" > "$tmp/unit/switchyard.service"
	if out=$(MANPATH=$v/usr/local/share/man systemd-analyze verify "$tmp/unit/switchyard.service" 2>&1) \
		&& [ -z "$out" ]; then
		ok "systemd-analyze verify: clean (Documentation= man pages found in the DESTDIR)"
	else
		bad "systemd-analyze verify:"; echo "$out"
	fi
else
	echo "SKIP systemd-analyze verify: systemd-analyze is not installed"
fi

if [ "$fails" -gt 0 ]; then echo "install-check: $fails failed"; exit 1; fi
echo "install-check: all passed"
