#!/usr/bin/env bash
# The fuzz targets, run long. cargo-fuzz needs a nightly toolchain, so the targets are proptest
# property tests (src/config/fuzz.rs, src/logs/fuzz.rs, the decoder's in src/control/protocol.rs);
# the test suite runs each with 256 cases, this script runs each for SECONDS (default 60) in
# rounds of CASES (default 2000) cases, each round with a fresh random seed.
#
#   bash bench/fuzz.sh [SECONDS]
#
# A failure stops the script with proptest's minimal failing input; proptest saves its seed
# under proptest-regressions/, which is committed so every later `cargo nextest run` replays it.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
cases=${CASES:-2000}
targets=(
  config::fuzz::fuzz_yaml_loader
  config::fuzz::fuzz_json_loader
  config::fuzz::fuzz_js_loader_output
  control::protocol::tests::fuzz_control_request_decoder
  logs::fuzz::fuzz_framer
  logs::fuzz::fuzz_log_date_format
)
bin=$(cargo test --locked --lib --no-run 2>&1 | sed -n 's/.*Executable unittests src\/lib.rs (\(.*\))/\1/p' | tail -1)
[ -x "$bin" ] || { echo "cannot find the unit test binary" >&2; exit 1; }
for t in "${targets[@]}"; do
  start=$SECONDS
  end=$((start + secs))
  rounds=0
  while [ "$SECONDS" -lt "$end" ]; do
    if ! PROPTEST_CASES=$cases "$bin" --exact "$t" --quiet >/tmp/fuzz-$$.log 2>&1; then
      cat /tmp/fuzz-$$.log
      echo "FAILED: $t (round $((rounds + 1)))" >&2
      exit 1
    fi
    rounds=$((rounds + 1))
  done
  echo "$t: $((rounds * cases)) cases in $((SECONDS - start)) s, no failure"
done
rm -f /tmp/fuzz-$$.log
