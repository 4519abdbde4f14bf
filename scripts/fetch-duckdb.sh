#!/usr/bin/env bash
# Puts DuckDB's official prebuilt shared library (libduckdb.so, with the parquet, json and icu
# extensions built in) where the build links against it: <repo>/.cache/duckdb/<version>/.
# Compiling DuckDB from source takes hours on a small machine; this takes seconds.
#
# The library comes from the npm registry package @duckdb/node-bindings-linux-x64 (DuckDB's
# own Node bindings ship the same libduckdb.so). Only python3 is needed: no npm, no curl. The
# tarball is checked against the sha512 integrity pinned below (the value the registry
# publishes for this exact version), so a changed or corrupted download is refused.
#
# Idempotent: does nothing when the library is already in place.
# Usage: scripts/fetch-duckdb.sh            (prints the library directory)
# Env:   DUCKDB_CACHE_ROOT  where to put it (default <repo>/.cache/duckdb)
set -euo pipefail

DUCKDB_VERSION="1.5.6"
NPM_PACKAGE="@duckdb/node-bindings-linux-x64"
NPM_VERSION="1.5.6-r.1"
NPM_INTEGRITY="sha512-IXcrZJE6kEqM0Z4wwdVnGBHX/frOS33VPNAwDXQ/Q+Fs84b058Qe94chrCCIcNJlG8Y3UHIUU4eBeCQxW5mN1Q=="
NPM_REGISTRY="${NPM_CONFIG_REGISTRY:-https://registry.npmjs.org}"

repo="$(cd "$(dirname "$0")/.." && pwd)"
dest="${DUCKDB_CACHE_ROOT:-$repo/.cache/duckdb}/$DUCKDB_VERSION"
say() { printf 'fetch-duckdb: %s\n' "$*" >&2; }

case "$(uname -s)-$(uname -m)" in
  Linux-x86_64) ;;
  *)
    say "no prebuilt library is pinned for $(uname -s)-$(uname -m); build with: cargo build --features duckmesh-engine/bundled"
    exit 1
    ;;
esac

if [[ -f "$dest/libduckdb.so" && -f "$dest/.complete" ]]; then
  echo "$dest"
  exit 0
fi

command -v python3 >/dev/null || { say "python3 is required"; exit 1; }
say "downloading $NPM_PACKAGE@$NPM_VERSION (DuckDB $DUCKDB_VERSION) into $dest"
mkdir -p "$dest"
python3 - "$NPM_REGISTRY" "$NPM_PACKAGE" "$NPM_VERSION" "$NPM_INTEGRITY" "$dest" <<'PY'
import base64, hashlib, io, json, os, sys, tarfile, tempfile, urllib.parse, urllib.request

registry, package, version, integrity, dest = sys.argv[1:]
algorithm, _, expected_b64 = integrity.partition("-")
if algorithm != "sha512":
    sys.exit(f"fetch-duckdb: unsupported integrity algorithm {algorithm}")

def fetch(url):
    for attempt in range(1, 4):
        try:
            with urllib.request.urlopen(url, timeout=120) as response:
                return response.read()
        except OSError as error:
            if attempt == 3:
                sys.exit(f"fetch-duckdb: cannot download {url}: {error}")
            print(f"fetch-duckdb: retrying {url} after: {error}", file=sys.stderr)

# The version document names the tarball; its integrity must match the pinned value too.
meta_url = f"{registry.rstrip('/')}/{urllib.parse.quote(package, safe='@')}/{version}"
meta = json.loads(fetch(meta_url))
dist = meta.get("dist", {})
if dist.get("integrity") != integrity:
    sys.exit(f"fetch-duckdb: the registry reports integrity {dist.get('integrity')!r} for "
             f"{package}@{version}, the script pins {integrity!r}; refusing")
tarball = fetch(dist["tarball"])
digest = base64.b64encode(hashlib.sha512(tarball).digest()).decode()
if digest != expected_b64:
    sys.exit(f"fetch-duckdb: downloaded tarball has sha512-{digest}, expected {integrity}; refusing")

with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as archive:
    member = next((m for m in archive.getmembers()
                   if m.isfile() and os.path.basename(m.name) == "libduckdb.so"), None)
    if member is None:
        sys.exit(f"fetch-duckdb: {package}@{version} holds no libduckdb.so")
    data = archive.extractfile(member).read()

# Write next to the destination and rename, so a crash never leaves a truncated library.
fd, tmp = tempfile.mkstemp(dir=dest, prefix=".libduckdb.so.")
with os.fdopen(fd, "wb") as out:
    out.write(data)
os.chmod(tmp, 0o755)
os.replace(tmp, os.path.join(dest, "libduckdb.so"))
with open(os.path.join(dest, ".complete"), "w") as marker:
    marker.write(f"{package}@{version} {integrity}\n")
print(f"fetch-duckdb: libduckdb.so ({len(data) // (1024 * 1024)} MiB) in place", file=sys.stderr)
PY
echo "$dest"
