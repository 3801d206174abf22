'use strict';
// Finds the native pm-runtime binary for this machine. Used by the launcher (bin/pm-runtime) and
// by the postinstall step (install.js). The binaries ship in one optional dependency per
// platform (esbuild's layout): npm installs only the one whose `os`/`cpu` match.

const fs = require('fs');
const path = require('path');

const VERSION = require('../package.json').version;

// `${process.platform}-${process.arch}` → the package that carries that binary.
const PACKAGES = {
  'linux-x64': '@pm-runtime/linux-x64',
  'linux-arm64': '@pm-runtime/linux-arm64',
};

class NoBinary extends Error {}

const FROM_SOURCE =
  'To build it from source instead: install Rust (https://rustup.rs), run\n' +
  '  cargo build --release --locked\n' +
  'in a checkout of pm-runtime, and point the launcher at the result:\n' +
  '  export PM_RUNTIME_BINARY_PATH=/path/to/pm-runtime/target/release/pm-runtime';

function isExecutableFile(p) {
  try {
    fs.accessSync(p, fs.constants.X_OK);
    return fs.statSync(p).isFile();
  } catch {
    return false;
  }
}

function packageDir(name) {
  try {
    return path.dirname(require.resolve(`${name}/package.json`));
  } catch {
    return null;
  }
}

/** The path of the binary to run; throws NoBinary with a message for the user. */
function findBinary() {
  const override = process.env.PM_RUNTIME_BINARY_PATH;
  if (override) {
    if (!isExecutableFile(override)) {
      throw new NoBinary(`PM_RUNTIME_BINARY_PATH=${override} is not an executable file.`);
    }
    return override;
  }
  const key = `${process.platform}-${process.arch}`;
  const name = PACKAGES[key];
  if (!name) {
    throw new NoBinary(
      `pm-runtime ${VERSION} has no prebuilt binary for ${key} ` +
        `(prebuilt: ${Object.keys(PACKAGES).join(', ')}).\n${FROM_SOURCE}`,
    );
  }
  const dir = packageDir(name);
  if (!dir) {
    // node_modules copied from another machine (a host's into a Linux image) is the usual cause.
    const other = Object.values(PACKAGES).filter((n) => n !== name && packageDir(n));
    const copied = other.length
      ? `\nFound ${other.join(', ')} instead: node_modules was installed on another platform. ` +
        'Run `npm ci` on this machine (in a Dockerfile: after COPY package*.json, not by copying node_modules).'
      : '';
    throw new NoBinary(
      `The package ${name}@${VERSION}, which carries pm-runtime's binary for ${key}, is not installed. ` +
        'It is an optional dependency of pm-runtime: do not install with --omit=optional or --no-optional.' +
        `${copied}\n${FROM_SOURCE}`,
    );
  }
  const bin = path.join(dir, 'bin', 'pm-runtime');
  if (!isExecutableFile(bin)) {
    throw new NoBinary(`${bin} is missing or not executable: reinstall ${name}@${VERSION}.\n${FROM_SOURCE}`);
  }
  return bin;
}

module.exports = { findBinary, NoBinary, PACKAGES, VERSION };
