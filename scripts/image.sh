#!/usr/bin/env bash
# `just image`: the DuckMesh container image (Containerfile), built without a daemon by buildah
# and exported as an OCI archive, built twice to prove the build is reproducible (the two
# manifest digests must be equal), then smoke-run with podman. docs/image.md says what is in it.
#
# Usage: scripts/image.sh [all|build|smoke ARCHIVE]
#   all    (default) build twice, compare the digests, smoke-run the image
#   build  build once, print the archive's path
#   smoke  smoke-run an archive built before
# Env:   DUCKMESH_IMAGE_DIR  where the archives and the private container storage live
#                            (default $CARGO_TARGET_DIR/image, or <repo>/target/image)
#        DUCKMESH_IMAGE_PROFILE  release (default) or debug: the cargo profile of the binary.
#                            CI uses debug: the same image, steps and checks from the binary its
#                            tests built, built in this clone, which must be clean (a cold
#                            release build alone takes 20-50 min on two cores)
#
# Installs buildah, podman and runc with apt when they are missing (nothing is ever pulled from
# a registry: the image is FROM scratch). The smoke run needs PostgreSQL's server binaries and
# moto_server (scripts/bootstrap.sh --tests installs both).
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"
mode="${1:-all}"
# The release build runs in a checkout under $out: keep it in this clone's target directory.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$repo/target}"
target_dir="$CARGO_TARGET_DIR"
out="${DUCKMESH_IMAGE_DIR:-$target_dir/image}"
tools="${DUCKMESH_TOOLS_DIR:-$HOME/.cache/duckmesh/tools}/venv/bin"
export CONTAINERS_CONF="$repo/scripts/image/containers.conf"
# The fixed mtime of every staged file, and the image's creation time (buildah --timestamp).
EPOCH=0
# The non-root user the image runs as (distroless' convention: 65532).
IMAGE_UID=65532

say() { printf 'image: %s\n' "$*" >&2; }
check() { printf 'image: smoke %-44s %s\n' "$1" "$2"; }
fail() { say "error: $*"; exit 1; }
now() { date +%s.%N; }
elapsed() { python3 -c 'import sys; print(f"{float(sys.argv[2]) - float(sys.argv[1]):.1f}")' "$1" "$(now)"; }

# --- tools: buildah, podman, runc (Debian packages), installed only when missing ---
as_root() {
  if [[ $(id -u) -eq 0 ]]; then "$@"
  elif command -v sudo >/dev/null; then sudo "$@"
  else fail "need root for: $*  (install sudo or run as root)"
  fi
}
apt_updated=false
apt_install() {
  command -v apt-get >/dev/null || fail "apt-get not found: install these packages by hand: $*"
  if ! $apt_updated; then
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    apt_updated=true
  fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}
ensure_tools() {
  local missing=()
  command -v buildah >/dev/null || missing+=(buildah)
  command -v podman >/dev/null || missing+=(podman)
  command -v runc >/dev/null || missing+=(runc)
  command -v objcopy >/dev/null || missing+=(binutils)
  [[ -f /etc/ssl/certs/ca-certificates.crt ]] || missing+=(ca-certificates)
  # Rootless builds map the image's users through newuidmap and store layers with
  # fuse-overlayfs; as root neither is needed (vfs storage, chroot isolation).
  if [[ $(id -u) -ne 0 ]]; then
    command -v newuidmap >/dev/null || missing+=(uidmap)
    command -v fuse-overlayfs >/dev/null || missing+=(fuse-overlayfs)
  fi
  if ((${#missing[@]})); then
    say "installing ${missing[*]}"
    apt_install "${missing[@]}"
  fi
  [[ -f /etc/containers/policy.json ]] || fail "/etc/containers/policy.json is missing (Debian's containers-common provides it)"
}

# A [workspace.package] field of the commit's Cargo.toml.
workspace_field() {
  git show "$revision:Cargo.toml" | sed -n "/^\[workspace.package\]/,/^\[/s/^$1 *= *\"\(.*\)\"/\1/p" | head -n 1
}
version() { workspace_field version; }
license() { workspace_field license; }
source_url() { workspace_field repository; }

# --- the release binary and DuckDB's library, built from the commit (never the work tree) ---
# The image holds what its revision label names: HEAD's tree, checked out into $src with a
# private index (the repository's own index and work tree are left alone). Only files whose
# content changed are rewritten, so cargo rebuilds only what changed since the last image.
revision="$(git rev-parse HEAD)"
src="$out/src"
profile="${DUCKMESH_IMAGE_PROFILE:-release}"
case "$profile" in
  release) binary_dir="$target_dir/release" ;;
  debug) binary_dir="$target_dir/debug" ;;
  *) fail "DUCKMESH_IMAGE_PROFILE must be release or debug, not $profile" ;;
esac
build_binary() {
  local started
  started="$(now)"
  if [[ "$profile" == debug ]]; then
    # Built in this clone, which holds exactly the commit: CI's clean checkout.
    [[ -z "$(git status --porcelain --untracked-files=no)" ]] \
      || fail "DUCKMESH_IMAGE_PROFILE=debug builds from the work tree, whose tracked files must be unchanged (commit or stash first)"
    scripts/fetch-duckdb.sh >/dev/null
    say "cargo build -p duckmesh --locked (debug profile, commit $(git rev-parse --short "$revision"))"
    cargo build -p duckmesh --locked --quiet || fail "the debug build of $revision failed"
    say "debug build: $(elapsed "$started") s"
    return
  fi
  if [[ -n "$(git status --porcelain --untracked-files=no)" ]]; then
    say "note: the work tree has uncommitted changes; the image is built from the commit $(git rev-parse --short "$revision") without them"
  fi
  mkdir -p "$src"
  GIT_INDEX_FILE="$out/src.index" git --work-tree="$src" read-tree -u --reset "$revision" \
    || fail "cannot check $revision out into $src"
  # .cargo/config.toml points the build at <checkout>/.cache/duckdb: share this clone's.
  scripts/fetch-duckdb.sh >/dev/null
  ln -sfn "$repo/.cache" "$src/.cache"
  say "cargo build --release -p duckmesh --locked (commit $(git rev-parse --short "$revision"), in $src)"
  (cd "$src" && cargo build --release -p duckmesh --locked --quiet) || fail "the release build of $revision failed"
  say "release build: $(elapsed "$started") s"
}

# The shared libraries FILE loads, as ldd resolves them on this machine (absolute paths), and
# its program interpreter. Fails when one is missing.
libraries_of() {
  local file="$1" listing
  listing="$(ldd "$file")" || fail "ldd $file failed"
  if grep -q 'not found' <<<"$listing"; then
    fail "$file needs libraries this machine lacks:"$'\n'"$(grep 'not found' <<<"$listing")"
  fi
  # "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)" and "/lib64/ld-linux-x86-64.so.2 (0x…)"
  awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' <<<"$listing"
}

# Stages the image's root filesystem in DIR: every file with a fixed mtime, owned by root, with
# explicit modes, so two stagings of one build are byte-identical.
stage_rootfs() {
  local rootfs="$1" binary="$binary_dir/duckmesh" duckdb_dir library
  duckdb_dir="$(scripts/fetch-duckdb.sh)"
  [[ -x "$binary" ]] || fail "$binary is missing (cargo build --profile $profile -p duckmesh)"
  rm -rf "$rootfs"
  # /tmp and /var/cache/duckmesh are the worker pod's emptyDir mount points (docs/operator.md).
  mkdir -p "$rootfs"/{etc/ssl/certs,usr/local/bin,usr/local/lib/duckmesh,tmp,var/cache/duckmesh}

  # The binary finds libduckdb.so through its rpath's $ORIGIN (crates/engine/build.rs): both
  # live in one directory, and PATH reaches the binary through a symlink ($ORIGIN is the
  # resolved path). The release binary comes without debug sections (Cargo.toml's
  # `[profile.release.package.duckmesh] strip`); the test profile's (image-ci) keeps line tables:
  # drop any here, keep the symbols (function names in panics' backtraces).
  objcopy --strip-debug "$binary" "$rootfs/usr/local/lib/duckmesh/duckmesh"
  cp "$duckdb_dir/libduckdb.so" "$rootfs/usr/local/lib/duckmesh/libduckdb.so"
  ln -s ../lib/duckmesh/duckmesh "$rootfs/usr/local/bin/duckmesh"

  # Exactly what the two load (glibc, libstdc++, libgcc_s, the dynamic loader), at the paths
  # the loader searches without an ld.so.cache.
  while read -r library; do
    mkdir -p "$rootfs$(dirname "$library")"
    cp -L "$library" "$rootfs$library"
  done < <({ libraries_of "$binary"; libraries_of "$duckdb_dir/libduckdb.so"; } | grep -v '/libduckdb\.so$' | sort -u)

  cp -L /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
  # HOME is /tmp: with a read-only root file system it is the one writable directory.
  printf 'root:x:0:0:root:/root:/sbin/nologin\nduckmesh:x:%d:%d:duckmesh:/tmp:/sbin/nologin\n' \
    "$IMAGE_UID" "$IMAGE_UID" >"$rootfs/etc/passwd"
  printf 'root:x:0:\nduckmesh:x:%d:\n' "$IMAGE_UID" >"$rootfs/etc/group"
  # glibc's default without this file asks DNS before /etc/hosts.
  printf 'passwd: files\ngroup: files\nhosts: files dns\n' >"$rootfs/etc/nsswitch.conf"

  find "$rootfs" -type d -exec chmod 0755 {} +
  find "$rootfs" -type f -exec chmod 0644 {} +
  chmod 0755 "$rootfs/usr/local/lib/duckmesh/duckmesh" "$rootfs/usr/local/lib/duckmesh/libduckdb.so"
  find "$rootfs" -type f -name '*.so*' -exec chmod 0755 {} +
  # Writable by anyone, sticky, like /tmp: a run without the emptyDirs (a writable root file
  # system) still works, and podman's --tmpfs copies the mode up.
  chmod 1777 "$rootfs/tmp" "$rootfs/var/cache/duckmesh"
  if [[ $(id -u) -eq 0 ]]; then chown -R -h 0:0 "$rootfs"; fi
  find "$rootfs" -exec touch -h -d "@$EPOCH" {} +
}

# A buildah/podman invocation on private vfs storage under DIR (never /var/lib/containers).
storage_flags() { printf '%s\n' --storage-driver vfs --root "$1/storage" --runroot "$1/run"; }

# Builds the image once in the fresh directory DIR (its own staged root and storage) and
# exports it to ARCHIVE.
build_once() {
  local dir="$1" archive="$2" ver started flags=()
  ver="$(version)"
  rm -rf "$dir"
  mkdir -p "$dir/context"
  mapfile -t flags < <(storage_flags "$dir")
  started="$(now)"
  stage_rootfs "$dir/context/rootfs"
  buildah "${flags[@]}" build --quiet --isolation chroot --timestamp "$EPOCH" --pull=never \
    --build-arg "VERSION=$ver" --build-arg "REVISION=$revision" --build-arg "SOURCE=$(source_url)" \
    --build-arg "LICENSES=$(license)" \
    --file "$repo/Containerfile" --tag "localhost/duckmesh:$ver" "$dir/context" >"$dir/build.log" 2>&1 \
    || { cat "$dir/build.log" >&2; fail "buildah build failed"; }
  rm -f "$archive"
  buildah "${flags[@]}" push --quiet "localhost/duckmesh:$ver" "oci-archive:$archive:duckmesh:$ver" \
    >>"$dir/build.log" 2>&1 || { cat "$dir/build.log" >&2; fail "buildah push to $archive failed"; }
  # The layers live on in the archive; the storage copy (~ the image's size, vfs) is not needed.
  buildah "${flags[@]}" rmi --all >/dev/null 2>&1 || true
  rm -rf "$dir/context" "$dir/storage"
  say "image build: $(elapsed "$started") s ($archive)"
}

# "<manifest digest> <config digest> <compressed bytes> <uncompressed bytes>" of an OCI archive.
inspect_archive() {
  python3 - "$1" <<'PY'
import json, sys, tarfile, zlib

with tarfile.open(sys.argv[1]) as archive:
    def blob(digest):
        return archive.extractfile("blobs/" + digest.replace(":", "/")).read()
    index = json.loads(archive.extractfile("index.json").read())
    if len(index["manifests"]) != 1:
        sys.exit(f"image: {sys.argv[1]} holds {len(index['manifests'])} manifests, expected one")
    manifest_digest = index["manifests"][0]["digest"]
    manifest = json.loads(blob(manifest_digest))
    compressed = manifest["config"]["size"] + sum(layer["size"] for layer in manifest["layers"])
    uncompressed = manifest["config"]["size"]
    for layer in manifest["layers"]:
        data = blob(layer["digest"])
        if "gzip" in layer["mediaType"]:
            data = zlib.decompress(data, wbits=31)
        uncompressed += len(data)
    print(manifest_digest, manifest["config"]["digest"], compressed, uncompressed)
PY
}

mb() { python3 -c 'import sys; print(f"{int(sys.argv[1]) / 1e6:.1f}")' "$1"; }

build_all() {
  local ver archive first second
  ver="$(version)"
  archive="$out/duckmesh-$ver.oci.tar"
  build_binary
  mkdir -p "$out"
  # Two independent builds: each stages its own root file system into its own empty storage.
  build_once "$out/build-1" "$archive"
  build_once "$out/build-2" "$out/build-2/duckmesh-$ver.oci.tar"
  read -r -a first < <(inspect_archive "$archive")
  read -r -a second < <(inspect_archive "$out/build-2/duckmesh-$ver.oci.tar")
  say "build 1: digest=${first[0]} config=${first[1]}"
  say "build 2: digest=${second[0]} config=${second[1]}"
  if [[ "${first[0]}" != "${second[0]}" || "${first[1]}" != "${second[1]}" ]]; then
    fail "the two builds of $(git rev-parse --short HEAD) differ: the image is not reproducible (compare $archive and $out/build-2/)"
  fi
  rm -rf "$out/build-2"
  echo "image=$archive digest=${first[0]} size_mb=$(mb "${first[2]}") (compressed)/$(mb "${first[3]}") (uncompressed)"
}

# --- the smoke run: podman, a read-only root file system, /tmp a tmpfs, no capabilities ---
smoke() {
  local archive="$1" ver image dir flags=() run=() started
  [[ -f "$archive" ]] || fail "no image archive at $archive (scripts/image.sh build)"
  ver="$(version)"
  image="localhost/duckmesh:$ver"
  dir="$out/smoke"
  started="$(now)"
  rm -rf "$dir"
  mkdir -p "$dir"
  mapfile -t flags < <(storage_flags "$dir")
  podman "${flags[@]}" load --quiet --input "$archive" >"$dir/load.log" 2>&1 \
    || { cat "$dir/load.log" >&2; fail "podman load $archive failed"; }
  # The archive names the image duckmesh:<version>; podman files it under localhost/.
  podman "${flags[@]}" image exists "$image" || fail "podman load did not produce $image ($(cat "$dir/load.log"))"
  run=(podman "${flags[@]}" run --rm --pull never --read-only --read-only-tmpfs=false
    --tmpfs "/tmp:rw,mode=1777" --tmpfs "/var/cache/duckmesh:rw,mode=1777" --cap-drop ALL --security-opt no-new-privileges)

  local user
  user="$(podman "${flags[@]}" image inspect --format '{{.Config.User}} {{index .Config.Entrypoint 0}}' "$image")"
  [[ "$user" == "$IMAGE_UID:$IMAGE_UID duckmesh" ]] || fail "the image runs as/with '$user', expected '$IMAGE_UID:$IMAGE_UID duckmesh'"
  check "user and entrypoint" "ok ($user)"

  local reported
  reported="$("${run[@]}" --network none "$image" --version 2>&1)" || fail "duckmesh --version failed: $reported"
  [[ "$reported" == "duckmesh $ver"* ]] || fail "duckmesh --version printed '$reported', expected 'duckmesh $ver…'"
  check "duckmesh --version" "ok ($reported)"

  "${run[@]}" --network none "$image" crds >"$dir/crds.yaml" 2>"$dir/crds.err" \
    || { cat "$dir/crds.err" >&2; fail "duckmesh crds failed"; }
  # The binary is the commit's its revision label names: compare with that commit's CRDs.
  local built_from
  built_from="$(podman "${flags[@]}" image inspect --format '{{index .Config.Labels "org.opencontainers.image.revision"}}' "$image")"
  git show "$built_from:crds/duckmesh.io.yaml" >"$dir/crds.expected.yaml" 2>/dev/null \
    || fail "the image's revision label '$built_from' names no commit of this clone"
  cmp -s "$dir/crds.yaml" "$dir/crds.expected.yaml" \
    || { diff -u "$dir/crds.expected.yaml" "$dir/crds.yaml" | head -n 20 >&2; fail "duckmesh crds differs from crds/duckmesh.io.yaml"; }
  check "duckmesh crds = crds/duckmesh.io.yaml" "ok ($(wc -l <"$dir/crds.yaml") lines)"

  smoke_worker "$image" "$dir" "${run[@]}"
  # The loaded copy (vfs: the whole root file system) is not needed any more.
  podman "${flags[@]}" rmi --all --force >/dev/null 2>&1 || true
  rm -rf "$dir/storage"
  say "smoke run: $(elapsed "$started") s"
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# The image's `duckmesh migrate` and one pipeline run by the image's `duckmesh dev` (which
# leases each task and runs its attempt as the image's `duckmesh worker` process) against a
# throwaway PostgreSQL and moto (S3) on the host network; the commits are then read back from
# the catalog and the bucket on the host.
smoke_worker() {
  local image="$1" dir="$2" run
  shift 2
  run=("$@")
  [[ -x "$tools/moto_server" ]] || fail "$tools/moto_server is missing: run scripts/bootstrap.sh --tests"
  for candidate in "${DUCKMESH_PG_BIN_DIR:-}" "$(dirname "$(command -v pg_ctl 2>/dev/null || echo /nonexistent/x)")" \
    $(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V -r); do
    if [[ -n "$candidate" && -x "$candidate/pg_ctl" ]]; then pg_bin="$candidate"; break; fi
  done
  [[ -n "$pg_bin" ]] || fail "no PostgreSQL server binaries (scripts/bootstrap.sh installs them)"
  local psql="$pg_bin/psql"
  [[ -x "$psql" ]] || psql="$(command -v psql)" || fail "psql not found (Debian: postgresql-client)"

  work="$(mktemp -d "${TMPDIR:-/tmp}/duckmesh-image-smoke.XXXXXX")"
  chmod 755 "$work"
  mkdir -p "$work/pg"
  if [[ $(id -u) -eq 0 ]]; then
    chown nobody "$work/pg"
    as_pg=(setpriv --reuid=nobody --regid="$(id -g nobody)" --clear-groups --)
  fi
  local pg_port moto_port api_port database_url bucket=duckmesh-image-smoke
  pg_port="$(free_port)"
  "${as_pg[@]}" "$pg_bin/initdb" -D "$work/pg/data" -U postgres -A trust --no-sync >"$dir/initdb.log" 2>&1 \
    || { cat "$dir/initdb.log" >&2; fail "initdb failed"; }
  "${as_pg[@]}" "$pg_bin/pg_ctl" -D "$work/pg/data" -l "$work/pg/postgres.log" -w start \
    -o "-p $pg_port -k $work/pg -c listen_addresses=127.0.0.1 -c fsync=off" >/dev/null \
    || { cat "$work/pg/postgres.log" >&2; fail "PostgreSQL did not start"; }
  database_url="postgres://postgres@127.0.0.1:$pg_port/postgres"

  moto_port="$(free_port)"
  "$tools/moto_server" -p "$moto_port" >"$dir/moto.log" 2>&1 &
  pids+=($!)
  local up=false
  for _ in $(seq 1 150); do
    if curl -fsS -o /dev/null "http://127.0.0.1:$moto_port/moto-api/" 2>/dev/null; then up=true; break; fi
    sleep 0.2
  done
  $up || { cat "$dir/moto.log" >&2; fail "moto_server did not come up"; }
  curl -fsS -X PUT "http://127.0.0.1:$moto_port/$bucket" >/dev/null

  local net=(--network host -e DUCKMESH_LOG=warn)
  "${run[@]}" "${net[@]}" "$image" migrate --database-url "$database_url" >"$dir/migrate.log" 2>&1 \
    || { cat "$dir/migrate.log" >&2; fail "duckmesh migrate (in the image) failed"; }
  local applied
  applied="$("$psql" -X -A -t -q "$database_url" -c 'SELECT count(*) FROM _sqlx_migrations WHERE success')"
  check "duckmesh migrate" "ok ($applied migrations applied to the host's PostgreSQL)"

  api_port="$(free_port)"
  local started
  started="$(now)"
  "${run[@]}" "${net[@]}" \
    -v "$repo/scripts/image/smoke-pipeline.yaml:/smoke/pipeline.yaml:ro" \
    -e AWS_ACCESS_KEY_ID=smoke -e AWS_SECRET_ACCESS_KEY=smoke -e DUCKMESH_S3_REGION=us-east-1 \
    -e DUCKMESH_CACHE_DIR=/var/cache/duckmesh \
    "$image" dev /smoke/pipeline.yaml --state-dir /tmp/state --database-url "$database_url" \
    --listen "127.0.0.1:$api_port" --max-parallel 1 \
    --s3-bucket "$bucket" --s3-endpoint "http://127.0.0.1:$moto_port" >"$dir/dev.log" 2>&1 \
    || { tail -n 40 "$dir/dev.log" >&2; fail "duckmesh dev (in the image) did not run the pipeline to success"; }

  # Read the commits back on the host: one snapshot per task, made by a worker attempt the
  # image ran, every file it lists present in the bucket.
  local rows
  rows="$("$psql" -X -A -t -q -F ' ' "$database_url" -c "
    SELECT d.name, s.row_count, a.state, regexp_replace(a.runner, '^dev/[0-9]+/', 'dev/'),
           (SELECT count(*) FROM files f WHERE f.dataset_id = s.dataset_id AND f.added_in = s.id)
    FROM snapshots s JOIN datasets d ON d.id = s.dataset_id JOIN attempts a ON a.id = s.attempt_id
    ORDER BY d.name")"
  local expected=$'trip-totals 10 Succeeded dev/totals-a1 1\ntrips 5000 Succeeded dev/trips-a1 1'
  [[ "$rows" == "$expected" ]] || fail "the catalog holds (dataset rows attempt-state runner files):"$'\n'"$rows"$'\n'"expected:"$'\n'"$expected"
  # Every committed file is in the bucket, whole: the size and SHA-256 the catalog recorded.
  "$psql" -X -A -t -q -F ' ' "$database_url" -c 'SELECT path, bytes, sha256 FROM files ORDER BY path' >"$dir/files.txt"
  "$tools/python" - "http://127.0.0.1:$moto_port" "$bucket" "$dir/files.txt" <<'PY' || fail "the bucket does not hold the committed files"
import hashlib, sys
import boto3

endpoint, bucket, listing = sys.argv[1:]
s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                  aws_access_key_id="smoke", aws_secret_access_key="smoke")
with open(listing) as lines:
    files = [line.split() for line in lines if line.strip()]
if not files:
    sys.exit("image: the catalog lists no files")
for path, size, sha256 in files:
    body = s3.get_object(Bucket=bucket, Key=path)["Body"].read()
    if len(body) != int(size) or hashlib.sha256(body).hexdigest() != sha256:
        sys.exit(f"image: {path} in the bucket: {len(body)} bytes, sha256 {hashlib.sha256(body).hexdigest()}; "
                 f"the catalog recorded {size} bytes, sha256 {sha256}")
PY
  check "worker attempts (duckmesh dev in the image)" "ok (2 tasks committed: trips 5000 rows, trip-totals 10 rows; $(elapsed "$started") s)"

  # The worker as the operator's pod runs it (args ["worker"], the attempt's identity in the
  # environment), given the identity of an attempt that already committed: it must be fenced
  # out (exit 12) and change nothing.
  local identity status=0 snapshots
  read -r -a identity < <("$psql" -X -A -t -q -F ' ' "$database_url" -c "
    SELECT a.task_id, a.id, a.fence FROM attempts a JOIN tasks t ON t.id = a.task_id WHERE t.name = 'trips'")
  ((${#identity[@]} == 3)) || fail "no attempt of the task trips in the catalog"
  "${run[@]}" "${net[@]}" \
    -e DUCKMESH_TASK_ID="${identity[0]}" -e DUCKMESH_ATTEMPT_ID="${identity[1]}" -e DUCKMESH_FENCE="${identity[2]}" \
    -e DUCKMESH_DATABASE_URL="$database_url" -e DUCKMESH_S3_BUCKET="$bucket" \
    -e DUCKMESH_S3_ENDPOINT="http://127.0.0.1:$moto_port" -e DUCKMESH_S3_FORCE_PATH_STYLE=true \
    -e DUCKMESH_S3_REGION=us-east-1 -e AWS_ACCESS_KEY_ID=smoke -e AWS_SECRET_ACCESS_KEY=smoke \
    -e DUCKMESH_CACHE_DIR=/var/cache/duckmesh -e DUCKMESH_RUNNER=image-smoke-stale \
    "$image" worker >"$dir/stale-worker.log" 2>&1 || status=$?
  ((status == 12)) || { cat "$dir/stale-worker.log" >&2; fail "duckmesh worker with a committed attempt's identity exited $status, expected 12 (fenced out)"; }
  snapshots="$("$psql" -X -A -t -q "$database_url" -c 'SELECT count(*) FROM snapshots')"
  [[ "$snapshots" == 2 ]] || fail "the fenced-out worker changed the catalog: $snapshots snapshots, expected 2"
  check "stale worker pod (duckmesh worker)" "ok (exit 12, fenced out, nothing committed)"
}

# What the smoke run starts (a PostgreSQL cluster, moto), stopped and removed however the
# script ends.
pg_bin="" as_pg=() pids=() work=""
cleanup() {
  local pid
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [[ -n "$work" && -f "$work/pg/data/postmaster.pid" ]]; then
    "${as_pg[@]}" "$pg_bin/pg_ctl" -D "$work/pg/data" -m immediate -w stop >/dev/null 2>&1 || true
  fi
  if [[ -n "$work" ]]; then rm -rf "$work"; fi
}
trap cleanup EXIT

ensure_tools
case "$mode" in
  all)
    build_all
    smoke "$out/duckmesh-$(version).oci.tar"
    ;;
  build)
    build_binary
    mkdir -p "$out"
    build_once "$out/build-1" "$out/duckmesh-$(version).oci.tar"
    read -r -a first < <(inspect_archive "$out/duckmesh-$(version).oci.tar")
    echo "image=$out/duckmesh-$(version).oci.tar digest=${first[0]} size_mb=$(mb "${first[2]}") (compressed)/$(mb "${first[3]}") (uncompressed)"
    ;;
  smoke)
    smoke "${2:-$out/duckmesh-$(version).oci.tar}"
    ;;
  *)
    fail "unknown mode '$mode' (all, build or smoke ARCHIVE)"
    ;;
esac
