#!/usr/bin/env bash
# make_dist.sh MANIFEST OUT.tar.gz AR — the action behind udrm_dist (tools/dist.bzl).
#
# MANIFEST lines, tab-separated:
#   own_obj  PATH        an object of udrm's own → lib/libudrm.a
#   absl_obj PATH        an object of Abseil's   → lib/libudrm_absl.a
#   udrm_hdr PATH REL    a udrm header at REL (e.g. sched/job.h) → include/udrm/REL, with its
#                        includes of udrm's packages ("fence/fence.h") made "udrm/fence/fence.h"
#   absl_hdr PATH REL    an Abseil header (absl/...) → include/udrm/third_party/REL, unchanged
#   file     PATH DEST   copied to DEST
# The tarball is rooted at the install prefix (lib/, include/, share/) and byte-for-byte
# reproducible (sorted names, owner 0, mtime 0, gzip without a name or time).
set -euo pipefail
manifest=$1 out=$2 ar=$3

stage=$(mktemp -d "${TMPDIR:-/tmp}/udrm_dist.XXXXXX")
stage=$(cd "$stage" && pwd)  # absolute: copies below run from other directories
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/lib" "$stage/include/udrm/third_party"

own=() absl=() udrm_hdrs=() absl_hdrs=() files=()
while IFS=$'\t' read -r kind path rel; do
  case $kind in
    own_obj) own+=("$path") ;;
    absl_obj) absl+=("$path") ;;
    udrm_hdr|absl_hdr)
      # Copied below with `cp --parents` from the directory PATH's REL is relative to.
      [ "${path%"$rel"}$rel" = "$path" ] ||
        { echo "make_dist.sh: $path does not end in $rel" >&2; exit 1; }
      if [ "$kind" = udrm_hdr ]; then udrm_hdrs+=("$path" "$rel"); else absl_hdrs+=("$path" "$rel"); fi
      ;;
    file) files+=("$path" "$rel") ;;
    *) echo "make_dist.sh: bad manifest line: $kind $path" >&2; exit 1 ;;
  esac
done < "$manifest"
[ ${#own[@]} -gt 0 ] || { echo "make_dist.sh: no udrm objects" >&2; exit 1; }

# copy_tree DEST PATH REL PATH REL ...: each PATH to DEST/REL, one cp per source directory (the
# machines this runs on are small and busy: a process per header took a minute).
copy_tree() {
  local dest=$1; shift
  local -A by_base=()
  local path rel base
  while [ $# -gt 0 ]; do
    path=$1 rel=$2; shift 2
    base=${path%"$rel"}
    by_base[${base:-.}]+="$rel"$'\n'
  done
  mkdir -p "$dest"
  for base in "${!by_base[@]}"; do
    (cd "$base" && printf '%s' "${by_base[$base]}" | xargs -d '\n' cp --parents -t "$dest")
  done
}
copy_tree "$stage/include/udrm" "${udrm_hdrs[@]}"
copy_tree "$stage/include/udrm/third_party" "${absl_hdrs[@]}"
for ((i = 0; i < ${#files[@]}; i += 2)); do
  mkdir -p "$(dirname "$stage/${files[i + 1]}")"
  cp "${files[i]}" "$stage/${files[i + 1]}"
done

# udrm's top-level packages (base, fence, ...): the include roots to put under udrm/.
root_re=$(for ((i = 1; i < ${#udrm_hdrs[@]}; i += 2)); do echo "${udrm_hdrs[i]%%/*}"; done |
          sort -u | paste -sd'|')
mapfile -t installed < <(for ((i = 1; i < ${#udrm_hdrs[@]}; i += 2)); do
                           echo "$stage/include/udrm/${udrm_hdrs[i]}"; done)
sed -i -E "s@^([[:space:]]*#[[:space:]]*include[[:space:]]*)\"($root_re)/@\\1\"udrm/\\2/@" \
  "${installed[@]}"

# No installed udrm header may still include a bare package root.
if grep -rEn "^[[:space:]]*#[[:space:]]*include[[:space:]]*[\"<]($root_re)/" "$stage/include/udrm" \
    --include='*.h' --exclude-dir=third_party; then
  echo "make_dist.sh: the headers above still include a bare udrm root" >&2
  exit 1
fi

# One archive each. `q` appends (objects of two packages may share a file name, which `r` would
# replace); `s` writes the symbol index; `D` zeroes timestamps and owners.
"$ar" qcsD "$stage/lib/libudrm.a" "${own[@]}"
[ ${#absl[@]} -eq 0 ] || "$ar" qcsD "$stage/lib/libudrm_absl.a" "${absl[@]}"

chmod -R u=rwX,go=rX "$stage"
tar -C "$stage" --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -cf - lib include share \
  | gzip -n > "$out"
