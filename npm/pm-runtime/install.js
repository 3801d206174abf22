'use strict';
// postinstall, an optimisation only (esbuild's pattern): put the native binary where the `bin`
// entry points, in place of the JavaScript launcher, so `node_modules/.bin/pm-runtime` is
// pm-runtime itself (no Node process in between; in a container it is PID 1). Any failure
// leaves the launcher in place, which finds and runs the same binary; the install never fails
// because of this step.

const fs = require('fs');
const path = require('path');
const { execFileSync } = require('child_process');
const { findBinary, NoBinary, VERSION } = require('./lib/binary.js');

const launcher = path.join(__dirname, 'bin', 'pm-runtime');

function main() {
  if (process.platform === 'win32') return;
  // Yarn 2+ (PnP) runs bins through its own wrappers and cannot take a binary here.
  if (/^yarn\/[2-9]/.test(process.env.npm_config_user_agent || '')) return;
  // PM_RUNTIME_BINARY_PATH is read when pm-runtime runs: only the launcher can honour it.
  if (process.env.PM_RUNTIME_BINARY_PATH) return;
  let bin;
  try {
    bin = findBinary();
  } catch (e) {
    if (!(e instanceof NoBinary)) throw e;
    process.stderr.write(`pm-runtime: warning: ${e.message}\n`);
    return;
  }
  // Only a binary that runs here and is this version replaces the launcher.
  let version;
  try {
    version = execFileSync(bin, ['--version'], { encoding: 'utf8', timeout: 10000 }).trim();
  } catch (e) {
    process.stderr.write(`pm-runtime: warning: ${bin} --version failed (${e.message}); keeping the launcher\n`);
    return;
  }
  if (version !== `pm-runtime ${VERSION}`) {
    process.stderr.write(`pm-runtime: warning: ${bin} says "${version}", expected ${VERSION}; keeping the launcher\n`);
    return;
  }
  // A hard link costs no space; a copy where links are impossible (another file system). Then
  // rename over the launcher, which is atomic: the bin entry is never missing or half written.
  const tmp = path.join(__dirname, 'bin', `.pm-runtime.${process.pid}`);
  try {
    try {
      fs.linkSync(bin, tmp);
    } catch {
      fs.copyFileSync(bin, tmp);
      fs.chmodSync(tmp, 0o755);
    }
    fs.renameSync(tmp, launcher);
  } catch (e) {
    try {
      fs.unlinkSync(tmp);
    } catch {
      // nothing to clean up
    }
    process.stderr.write(`pm-runtime: note: keeping the launcher (${e.message})\n`);
  }
}

main();
