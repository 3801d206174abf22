#!/usr/bin/env bash
# Builds pm-runtime's npm packages (see npm/README.md): the static release binary for each
# platform, staged into a copy of its platform package, every package.json version checked
# against Cargo.toml, then `npm pack` of each into the output folder (default npm/dist/).
#
#   npm/build.sh [--out DIR] [--platforms linux-x64,linux-arm64] [--binary PLATFORM=PATH]...
#   npm/build.sh --check         only check that every version matches Cargo.toml (exit 1 if not)
#   npm/build.sh --set-version   write Cargo.toml's version into every package.json
#
# Without --platforms, every platform is attempted and one that cannot be built on this machine
# (no target std, no cross linker) is skipped with a message; a platform asked for by name must
# build. --binary packs a binary built elsewhere (CI takes the one its Docker build compiled)
# instead of running cargo; it is checked the same way. Publishing is then: npm publish DIR/*.tgz (platform packages first).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(dirname "$here")"
cd "$repo"

out="$here/dist"
platforms=""
mode=build
declare -A given=()
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out="$2"; shift 2 ;;
    --platforms) platforms="$2"; shift 2 ;;
    --binary) given["${2%%=*}"]="${2#*=}"; shift 2 ;;
    --check) mode=check; shift ;;
    --set-version) mode=set; shift ;;
    *) echo "npm/build.sh: unknown argument $1" >&2; exit 64 ;;
  esac
done

version="$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -1)"
[ -n "$version" ] || { echo "npm/build.sh: no version in Cargo.toml" >&2; exit 1; }

# Versions: each package's own, and the exact versions the main package pins its platform
# packages to, must all be Cargo.toml's.
node - "$mode" "$version" "$here" <<'JS'
const fs = require('fs');
const path = require('path');
const [mode, version, dir] = process.argv.slice(2);
const files = fs.readdirSync(dir).map((d) => path.join(dir, d, 'package.json')).filter((f) => fs.existsSync(f));
const bad = [];
for (const f of files) {
  const pkg = JSON.parse(fs.readFileSync(f, 'utf8'));
  if (pkg.name !== 'pm-runtime' && !pkg.name.startsWith('@pm-runtime/')) continue; // npm/registry: test tools
  const deps = pkg.optionalDependencies || {};
  if (mode === 'set') {
    pkg.version = version;
    for (const d of Object.keys(deps)) deps[d] = version;
    fs.writeFileSync(f, JSON.stringify(pkg, null, 2) + '\n');
    continue;
  }
  if (pkg.version !== version) bad.push(`${f}: version ${pkg.version}`);
  for (const [d, v] of Object.entries(deps)) if (v !== version) bad.push(`${f}: optionalDependencies.${d} ${v}`);
}
if (bad.length) {
  console.error(`npm/build.sh: package versions differ from Cargo.toml's ${version}:\n  ${bad.join('\n  ')}\n` +
    'Run npm/build.sh --set-version to bring them in step.');
  process.exit(1);
}
JS
[ "$mode" = build ] || exit 0

# platform → Rust target, and the linker that target needs when cross-compiling.
rust_target() { case "$1" in linux-x64) echo x86_64-unknown-linux-gnu ;; linux-arm64) echo aarch64-unknown-linux-gnu ;; *) return 1 ;; esac; }
cross_linker() { case "$1" in x86_64-unknown-linux-gnu) echo x86_64-linux-gnu-gcc ;; aarch64-unknown-linux-gnu) echo aarch64-linux-gnu-gcc ;; esac; }
elf_machine() { case "$1" in x86_64-unknown-linux-gnu) echo 3e00 ;; aarch64-unknown-linux-gnu) echo b700 ;; esac; }
host="$(rustc -vV | sed -n 's/^host: //p')"

required=1
if [ -z "$platforms" ]; then
  platforms="$(cd "$here" && ls -d linux-*/ | tr -d / | tr '\n' ',')"
  required=0
fi

mkdir -p "$out"
stage="$(mktemp -d "$out/.stage.XXXXXX")"
trap 'rm -rf "$stage"' EXIT
packed=()
built=()
skip() {
  if [ "$required" = 1 ]; then echo "npm/build.sh: cannot build $1: $2" >&2; exit 1; fi
  echo "npm/build.sh: skipping $1: $2" >&2
}
for p in ${platforms//,/ }; do
  t="$(rust_target "$p")" || { echo "npm/build.sh: unknown platform $p" >&2; exit 64; }
  env=(RUSTFLAGS='-C target-feature=+crt-static')
  if [ -n "${given[$p]:-}" ]; then
    bin="${given[$p]}"
    [ -f "$bin" ] || { echo "npm/build.sh: --binary $p=$bin: no such file" >&2; exit 1; }
  elif [ "$t" != "$host" ]; then
    if ! rustc --print sysroot >/dev/null || [ ! -d "$(rustc --print sysroot)/lib/rustlib/$t/lib" ]; then
      skip "$p" "no Rust standard library for $t (rustup target add $t)"
      continue
    fi
    linker="$(cross_linker "$t")"
    if ! command -v "$linker" >/dev/null; then
      skip "$p" "no cross linker $linker (Debian: apt-get install gcc-${linker%-gcc} libc6-dev-${p#linux-}-cross)"
      continue
    fi
    var="CARGO_TARGET_$(echo "$t" | tr 'a-z-' 'A-Z_')_LINKER"
    env+=("$var=$linker")
  fi
  if [ -z "${given[$p]:-}" ]; then
    echo "npm/build.sh: building $p ($t)" >&2
    env "${env[@]}" cargo build --release --locked --target "$t" >&2
    bin="target/$t/release/pm-runtime"
  fi
  # The right machine, and statically linked (no interpreter), before it goes anywhere.
  machine="$(od -An -tx1 -j18 -N2 "$bin" | tr -d ' \n')"
  [ "$machine" = "$(elf_machine "$t")" ] || { echo "npm/build.sh: $bin is not a $t binary (ELF machine $machine)" >&2; exit 1; }
  if grep -q -a 'ld-linux' <(head -c 4096 "$bin"); then echo "npm/build.sh: $bin is dynamically linked" >&2; exit 1; fi
  # It runs and is this version: natively, or under qemu-user for another CPU when installed
  # (Debian: qemu-user-static).
  run=()
  if [ "$t" != "$host" ]; then
    qemu="qemu-${t%%-*}-static"
    command -v "$qemu" >/dev/null || qemu="qemu-${t%%-*}"
    if command -v "$qemu" >/dev/null; then run=("$qemu"); else run=(skip); fi
  fi
  if [ "${run[0]:-}" = skip ]; then
    echo "npm/build.sh: not running the $p binary (no qemu-${t%%-*}-static); checked its ELF header only" >&2
  else
    said="$("${run[@]}" "$bin" --version)"
    [ "$said" = "pm-runtime $version" ] || { echo "npm/build.sh: $bin --version says '$said', expected $version" >&2; exit 1; }
  fi
  cp -R "$here/$p" "$stage/$p"
  mkdir -p "$stage/$p/bin"
  install -m 0755 "$bin" "$stage/$p/bin/pm-runtime"
  packed+=("$stage/$p")
  built+=("$p")
done
[ ${#packed[@]} -gt 0 ] || { echo "npm/build.sh: nothing was built" >&2; exit 1; }
# The main package pins exactly the platform packages packed with it: `npm ci` fails on a
# lockfile that names an optional dependency the registry does not have.
cp -R "$here/pm-runtime" "$stage/pm-runtime"
node - "$stage/pm-runtime/package.json" "$version" "${built[@]}" <<'JS'
const fs = require('fs');
const [file, version, ...built] = process.argv.slice(2);
const pkg = JSON.parse(fs.readFileSync(file, 'utf8'));
pkg.optionalDependencies = Object.fromEntries(built.map((p) => [`@pm-runtime/${p}`, version]));
fs.writeFileSync(file, JSON.stringify(pkg, null, 2) + '\n');
JS
packed+=("$stage/pm-runtime")
for d in "${packed[@]}"; do
  (cd "$d" && npm pack --silent --pack-destination "$out" >/dev/null)
done
echo "npm/build.sh: packed pm-runtime $version into $out:" >&2
(cd "$out" && ls -1 ./*"-$version.tgz") >&2
