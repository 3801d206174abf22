// pm-runtime's preload for Node apps, loaded with `--require` before the app's script.
// Written by pm-runtime at start (edits are overwritten). Turn it off per app with
// `pm_runtime_preload: false` in the ecosystem file.
//
// It gives the app what PM2's process container gives it, without touching the app's code:
//  - process.title is PROCESS_TITLE, else "node <script>";
//  - an unhandled promise rejection is logged to stderr and is not fatal;
//  - an uncaught exception is logged to stderr, then the process exits with code 1 (unless the
//    app listens for 'uncaughtException' itself).
'use strict';

(function pmRuntimePreload() {
  const env = process.env;
  const clusterMode = env.exec_mode === 'cluster_mode';

  if (env.PROCESS_TITLE || env.pm_exec_path) {
    try {
      process.title = env.PROCESS_TITLE || 'node ' + env.pm_exec_path;
    } catch (_) {
      // A title that cannot be set is not worth failing the app for.
    }
  }

  const text = (e) => (e && e.stack ? e.stack : e);
  const writeErr = (s) => {
    try {
      process.stderr.write(s + '\n');
    } catch (_) {
      // stderr closed: nothing left to tell.
    }
  };

  // PM2's cluster container prefixes rejections with this sentence; its fork container
  // (through @pm2/io) prints the reason as console.error does, and nothing for `undefined`.
  process.on('unhandledRejection', function pmRuntimeOnRejection(reason) {
    if (clusterMode) {
      writeErr('You have triggered an unhandledRejection, you may have forgotten to catch a Promise rejection:\n' + text(reason));
    } else if (reason !== undefined) {
      console.error(reason);
    }
  });

  process.on('uncaughtException', function pmRuntimeOnException(err) {
    if (clusterMode) {
      writeErr(text(err));
    } else {
      console.error(err);
    }
    // Another listener means the app handles its errors: it decides whether to exit.
    if (process.listeners('uncaughtException').length === 1) {
      process.exit(1);
    }
  });
})();
