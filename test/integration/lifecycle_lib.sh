# shellcheck shell=bash
# Helpers shared by the VDI lifecycle tests (snapshots, clones, rollback, delete,
# backup). Source it after harness.sh.
#
#   qio URI COMMAND...        one qemu-io session running each COMMAND; fails the test on
#                             any error or pattern mismatch ($PHASE names the step).
#   qio_ro URI COMMAND...     the same, opened read-only (qemu-io -r).
#   export_md5 URI            md5 of the whole export, read by nbdcopy.
#   file_md5 FILE             md5 of a local file.
#   check_json JSON EXPR...   every Python EXPR is true of `doc`; prints the document
#                             and the false ones otherwise.
#   json_get JSON EXPR        prints the Python EXPR evaluated on `doc`.
#   vdi_field NAME FIELD      FIELD of NAME ("disk" or "disk@tag") in `vdi list --json`.
#   node_objects              `objects` of `node info --json`.
#   objects_are N             true when node_objects is N (for poll_until).
#   list_snapshot             `vdi list --json`, canonical (sorted rows and keys).
#   expect_refusal REGEX KELPIE_ARGS...  the CLI exits non-zero with exactly one line
#                             "kelpie: ..." on stderr matching REGEX (grep -Ei) and
#                             nothing on stdout. Stdin is /dev/null unless
#                             REFUSAL_STDIN names a file.
# shellcheck disable=SC2034  # used by the tests
M=$((1024 * 1024))
PHASE=${PHASE:-setup}
# A script run under ZooKeeper membership too (cluster_lib.sh's _zk variants) gets
# its own files, so both variants can run at once (ctest -j).
LT_TMP="$KELPIE_TEST_DIR/$(basename "$0" | sed 's/\.[a-z]*$//')"
[ "${KELPIE_MEMBERSHIP:-local}" = local ] || LT_TMP="${LT_TMP}_zk"
LT_TMP="$LT_TMP.files"
rm -rf "$LT_TMP"
mkdir -p "$LT_TMP"

_qio() {
  local flags=$1 uri=$2; shift 2
  local args=() out
  for c in "$@"; do args+=(-c "$c"); done
  # shellcheck disable=SC2086  # $flags is empty or "-r"
  if ! out=$(qemu-io -f raw $flags "${args[@]}" "$uri" 2>&1) || grep -qiE 'fail|error' <<<"$out"; then
    echo "$out" >&2
    fail "$PHASE: qemu-io $flags on $uri: ${*}"
  fi
}
qio() { _qio "" "$@"; }
qio_ro() { _qio "-r" "$@"; }

export_md5() {
  local sum
  sum=$(set -o pipefail; nbdcopy "$1" - | md5sum | cut -d' ' -f1) || fail "$PHASE: nbdcopy $1 - failed"
  echo "$sum"
}
file_md5() { md5sum <"$1" | cut -d' ' -f1; }

check_json() {
  local json=$1; shift
  "$SYS_PYTHON" - "$json" "$@" <<'PY'
import json, sys
doc = json.loads(sys.argv[1])
bad = [expr for expr in sys.argv[2:] if not eval(expr)]
if bad:
    print("document:", json.dumps(doc, indent=1)[:6000], file=sys.stderr)
    for expr in bad:
        print("assertion failed:", expr, file=sys.stderr)
    sys.exit(1)
PY
}

json_get() {
  "$SYS_PYTHON" -c 'import json, sys; doc = json.loads(sys.argv[1]); print(eval(sys.argv[2]))' "$1" "$2"
}

vdi_field() {
  local name=$1 field=$2
  json_get "$(kcli vdi list --json)" "[v['$field'] for v in doc if v['name'] == '$name'][0]" ||
    fail "$PHASE: no '$name' in vdi list --json: $(kcli vdi list --json)"
}

node_objects() { json_get "$(kcli node info --json)" 'doc["objects"]'; }
objects_are() { [ "$(node_objects)" = "$1" ]; }

list_snapshot() {
  json_get "$(kcli vdi list --json)" \
    'json.dumps(sorted(doc, key=lambda v: v["name"]), sort_keys=True)'
}

expect_refusal() {
  local regex=$1; shift
  local status=0 stdin=${REFUSAL_STDIN:-/dev/null}
  "$KELPIE" --addr "$KD_ADMIN" "$@" >"$LT_TMP/refusal.out" 2>"$LT_TMP/refusal.err" <"$stdin" ||
    status=$?
  local err
  err=$(cat "$LT_TMP/refusal.err")
  [ "$status" != 0 ] || fail "$PHASE: kelpie $* succeeded, want a refusal matching /$regex/"
  [ "$(wc -l <"$LT_TMP/refusal.err")" = 1 ] ||
    fail "$PHASE: kelpie $*: stderr is not exactly one line: $err"
  [[ "$err" == "kelpie: "* ]] || fail "$PHASE: kelpie $*: stderr does not start with 'kelpie: ': $err"
  grep -qEi -- "$regex" <<<"$err" ||
    fail "$PHASE: kelpie $*: stderr '$err' does not match /$regex/"
  [ ! -s "$LT_TMP/refusal.out" ] ||
    fail "$PHASE: kelpie $*: wrote to stdout on error: $(head -c 200 "$LT_TMP/refusal.out")"
  echo "refused as expected: kelpie $* -> $err"
}
