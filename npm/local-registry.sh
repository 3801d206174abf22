#!/usr/bin/env bash
# A throwaway npm registry (verdaccio, no uplinks: nothing is fetched from or sent to the public
# registry) for testing pm-runtime's npm packages the way users install them.
#
#   npm/local-registry.sh tools                     install the test tools (npm/registry/package.json:
#                                                   verdaccio, pnpm, yarn) into $PM_RUNTIME_NPM_TOOLS
#                                                   (default target/npm-tools), once; prints that folder
#   npm/local-registry.sh serve DIR PORT            run verdaccio on 127.0.0.1:PORT in the foreground,
#                                                   with its config and storage in DIR
#   npm/local-registry.sh publish DIR PORT TGZ...   publish packed packages to it (writes DIR/npmrc,
#                                                   an npm user config with the registry and a token)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
tools="${PM_RUNTIME_NPM_TOOLS:-$(dirname "$here")/target/npm-tools}"

install_tools() {
  mkdir -p "$tools"
  # One installer at a time (tests run in parallel); reinstall when the lockfile changed.
  exec 9>"$tools/.lock"
  flock 9
  if ! cmp -s "$here/registry/package-lock.json" "$tools/installed-lock.json"; then
    cp "$here/registry/package.json" "$here/registry/package-lock.json" "$tools/"
    (cd "$tools" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >&2)
    cp "$here/registry/package-lock.json" "$tools/installed-lock.json"
  fi
  flock -u 9
}

case "${1:-}" in
  tools)
    install_tools
    echo "$tools"
    ;;
  serve)
    dir="$2" port="$3"
    install_tools
    mkdir -p "$dir/storage"
    cat >"$dir/config.yaml" <<EOF
storage: ./storage
auth:
  htpasswd:
    file: ./htpasswd
uplinks: {}
packages:
  '**':
    access: \$all
    publish: \$authenticated
    unpublish: \$authenticated
log: { type: stdout, format: pretty, level: warn }
EOF
    exec node "$tools/node_modules/verdaccio/bin/verdaccio" --config "$dir/config.yaml" --listen "127.0.0.1:$port"
    ;;
  publish)
    dir="$2" port="$3"
    shift 3
    url="http://127.0.0.1:$port/"
    for _ in $(seq 300); do curl -fs "${url}-/ping" >/dev/null && break; sleep 0.1; done
    curl -fs "${url}-/ping" >/dev/null || { echo "local-registry: nothing answers on $url" >&2; exit 1; }
    token="$(curl -fs -X PUT -H 'content-type: application/json' \
      -d '{"name":"ci","password":"ci-throwaway-password"}' "${url}-/user/org.couchdb.user:ci" |
      node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.parse(s).token))')"
    printf 'registry=%s\n//127.0.0.1:%s/:_authToken=%s\nfund=false\naudit=false\nupdate-notifier=false\n' \
      "$url" "$port" "$token" >"$dir/npmrc"
    for tgz in "$@"; do
      NPM_CONFIG_USERCONFIG="$dir/npmrc" npm publish --registry "$url" --loglevel=error "$tgz" >&2
    done
    ;;
  *)
    echo "usage: npm/local-registry.sh tools | serve DIR PORT | publish DIR PORT TGZ..." >&2
    exit 64
    ;;
esac
