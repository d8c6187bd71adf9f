#!/usr/bin/env bash
# Regenerates ccm's etcd v3 gRPC client code (ccm-adapters/src/etcd/pb/*.rs, committed) from the
# etcd .proto files in ccm-adapters/proto/, and checks it is identical to the committed files.
#
#   scripts/gen-etcd-proto.sh           # generate into a temporary directory and compare
#                                       # (exit 1 and show the diff when they differ)
#   scripts/gen-etcd-proto.sh --write   # generate and replace the committed files
#
# Building ccm never runs this: the generated code is committed so that `cargo build` needs no
# protoc. This script needs only cargo too: tools/etcd-codegen (its own Cargo project, outside
# the workspace, with a committed Cargo.lock) uses tonic-prost-build with the protoc binary
# shipped by the protoc-bin-vendored crate.
#
# The .proto files are etcd's (Apache-2.0), verbatim copies (see ccm-adapters/proto/README.md).
# Before protoc sees them the generator
#   - strips the grpc-gateway annotations (google.api.http options, the openapiv2 swagger
#     block) and etcd's versionpb annotations, and drops their imports, so no other .proto
#     (google/api, protoc-gen-openapiv2, versionpb) is needed — they do not change the wire format;
#   - keeps only the RPCs ccm calls (KV Range/Put/DeleteRange/Txn/Compact, Watch, Lease
#     Grant/Revoke/KeepAlive, Maintenance Status, Auth Authenticate) and the messages they reach;
#   - generates client code only (no server).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="$ROOT/ccm-adapters/src/etcd/pb"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

CARGO_TARGET_DIR="$ROOT/target/etcd-codegen" cargo run --quiet --locked \
  --manifest-path "$ROOT/tools/etcd-codegen/Cargo.toml" -- "$ROOT/ccm-adapters/proto" "$TMP"

if [ "${1:-}" = --write ]; then
  find "$OUT" -name '*.rs' ! -name mod.rs -delete
  cp "$TMP"/*.rs "$OUT"/
  echo "etcd gRPC code regenerated in ${OUT#"$ROOT"/}:"
  (cd "$OUT" && ls -1 -- *.rs | grep -v '^mod.rs$')
  exit 0
fi

status=0
for f in "$TMP"/*.rs; do
  name=$(basename "$f")
  if ! diff -u "$OUT/$name" "$f"; then status=1; fi
done
for f in "$OUT"/*.rs; do
  name=$(basename "$f")
  [ "$name" = mod.rs ] || [ -e "$TMP/$name" ] || { echo "stale generated file: $f"; status=1; }
done
if [ $status -ne 0 ]; then
  echo "the committed etcd gRPC code differs from what the protos generate: run $0 --write" >&2
  exit 1
fi
echo "etcd gRPC code in ${OUT#"$ROOT"/} is what the protos generate"
