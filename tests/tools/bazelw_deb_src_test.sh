#!/usr/bin/env bash
# bazelw --print-deb-src ROOT: the deb-src entries come from the apt sources under ROOT (one-line
# and deb822 forms, any mirror host), never from a host name in the script.
set -euo pipefail

bazelw=$1
export HOME=${HOME:-${TEST_TMPDIR:-/tmp}}  # bazel runs tests without HOME; bazelw reads it
tmp=$(mktemp -d "${TEST_TMPDIR:-/tmp}/debsrc.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
failures=0

# expect NAME ROOT: compares the output for ROOT with the expected lines on stdin.
expect() {
  local name=$1 root=$2
  "$bazelw" --print-deb-src "$root" > "$tmp/got"
  if ! diff -u /dev/stdin "$tmp/got" > "$tmp/diff"; then
    echo "FAIL: $name"; cat "$tmp/diff"; failures=$((failures + 1))
  else
    echo "ok: $name"
  fi
}

# One-line form through a mirror: options kept, comments, other suites, cdrom and duplicates
# dropped, an existing deb-src line kept once.
r=$tmp/oneline; mkdir -p "$r/etc/apt/sources.list.d"
cat > "$r/etc/apt/sources.list" <<'SRC'
# the company mirror
deb http://mirror.example.net/debian bookworm main contrib  # trailing comment
deb [arch=amd64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://mirror.example.net/debian-security bookworm-security main
deb [ trusted=yes ] http://proxy.local:3142/debian bookworm-updates main
deb-src http://mirror.example.net/debian bookworm main contrib
deb cdrom:[Debian 12]/ bookworm main
deb http://mirror.example.net/debian bullseye main
deb https://packages.cloud.google.com/apt cloud-sdk-bookworm main
#deb http://commented.example.net/debian bookworm main
SRC
cat > "$r/etc/apt/sources.list.d/extra.list" <<'SRC'
deb http://mirror.example.net/debian bookworm-backports main
SRC
echo 'deb http://ignored.example.net/debian bookworm main' > "$r/etc/apt/sources.list.d/x.list.disabled"
expect "one-line form, mirror host" "$r" <<'OUT'
deb-src http://mirror.example.net/debian bookworm main contrib
deb-src [arch=amd64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://mirror.example.net/debian-security bookworm-security main
deb-src [ trusted=yes ] http://proxy.local:3142/debian bookworm-updates main
deb-src http://mirror.example.net/debian bookworm-backports main
OUT

# deb822 form: several URIs and suites per paragraph, comments inside a paragraph, an inline
# key (no signed-by path to pass on), a disabled paragraph, a third-party suite, two files.
r=$tmp/deb822; mkdir -p "$r/etc/apt/sources.list.d"
cat > "$r/etc/apt/sources.list.d/debian.sources" <<'SRC'
Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://apt-cache.corp:3142/debian http://mirror2.example.org/debian
Suites: bookworm bookworm-updates
Components: main non-free-firmware
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb deb-src
URIs: http://apt-cache.corp:3142/debian-security
Suites: bookworm-security
Components: main
Signed-By:
 -----BEGIN PGP PUBLIC KEY BLOCK-----
 .
 mQINBGPL0BUBEADmW5NdOOHwPIJlgPu6JDcKw/NZJPR8lsD3K87ZM18gzyQZJD+w
 -----END PGP PUBLIC KEY BLOCK-----

Types: deb
URIs: http://disabled.example.net/debian
Suites: bookworm
Components: main
Enabled: no
SRC
cat > "$r/etc/apt/sources.list.d/node.sources" <<'SRC'
Types: deb
URIs: https://deb.nodesource.com/node_20.x
Suites: nodistro
Components: main
SRC
expect "deb822 form, proxy and mirror hosts" "$r" <<'OUT'
deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://apt-cache.corp:3142/debian bookworm main non-free-firmware
deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://apt-cache.corp:3142/debian bookworm-updates main non-free-firmware
deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://mirror2.example.org/debian bookworm main non-free-firmware
deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://mirror2.example.org/debian bookworm-updates main non-free-firmware
deb-src http://apt-cache.corp:3142/debian-security bookworm-security main
OUT

# Both forms in one tree: the same archive listed twice is printed once.
r=$tmp/both; mkdir -p "$r/etc/apt/sources.list.d"
echo 'deb http://m.example.com/debian bookworm main' > "$r/etc/apt/sources.list"
printf 'Types: deb\nURIs: http://m.example.com/debian\nSuites: bookworm\nComponents: main\n' \
  > "$r/etc/apt/sources.list.d/m.sources"
expect "both forms, duplicate" "$r" <<'OUT'
deb-src http://m.example.com/debian bookworm main
OUT

# No apt sources at all: nothing (bazelw's bootstrap then stops with a message).
mkdir -p "$tmp/empty"
expect "no sources" "$tmp/empty" < /dev/null

# The script names no archive host of its own.
if grep -nE 'https?://' "$bazelw" | grep -v '^[0-9]*:#'; then
  echo "FAIL: bazelw contains an archive URI"; failures=$((failures + 1))
fi

[ "$failures" -eq 0 ] && echo PASS
exit "$failures"
