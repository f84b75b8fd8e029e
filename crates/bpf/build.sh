#!/usr/bin/env bash
# Rebuilds the committed BPF objects (src/bpf/*.bpf.o) from their C sources with clang.
#
#   crates/bpf/build.sh           rebuild the objects in place
#   crates/bpf/build.sh --check   rebuild into a temporary directory and fail if the committed
#                                 objects differ (CI runs this before the tests)
#
# Output is byte-for-byte reproducible for one clang version: the compiler runs from the source
# directory on relative paths, with -fdebug-prefix-map, and the DWARF is stripped (the BTF and
# BTF.ext sections that aya needs are kept). The objects committed were built with Debian 12's
# clang 14 (`apt-get install clang llvm`); another clang version makes different bytes.
set -euo pipefail
cd "$(dirname "$0")/src/bpf"

CLANG=${CLANG:-clang}
STRIP=${LLVM_STRIP:-llvm-strip}
for tool in "$CLANG" "$STRIP"; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "build.sh: $tool not found (apt-get install -y clang llvm)" >&2
    exit 1
  fi
done

check=0
case "${1:-}" in
  --check) check=1 ;;
  "") ;;
  *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac

out=.
if [ "$check" = 1 ]; then
  out=$(mktemp -d)
  trap 'rm -rf "$out"' EXIT
fi

status=0
for src in *.bpf.c; do
  obj="${src%.c}.o"
  "$CLANG" -O2 -g -target bpf -D__TARGET_ARCH_x86 -Wall -Werror \
    -fdebug-prefix-map="$PWD"=. -fno-ident \
    -c "$src" -o "$out/$obj.tmp"
  "$STRIP" -g "$out/$obj.tmp" -o "$out/$obj"
  rm -f "$out/$obj.tmp"
  if [ "$check" = 1 ]; then
    if cmp -s "$obj" "$out/$obj"; then
      echo "ok: $obj matches $src"
    else
      echo "MISMATCH: committed $obj is not what $src builds to ($("$CLANG" --version | head -1));" \
        "run crates/bpf/build.sh and commit the result" >&2
      status=1
    fi
  else
    echo "built $obj"
  fi
done
exit $status
