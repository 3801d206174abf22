// pm-runtime's preload for Node apps, loaded with `--require` before the app's script.
// Written by pm-runtime at start (edits are overwritten). Turn it off per app with
// `pm_runtime_preload: false` in the ecosystem file.
//
// It gives the app what PM2's process container gives it, without touching the app's code:
//  - process.title is PROCESS_TITLE, else "node <script>";
//  - an unhandled promise rejection is logged to stderr and is not fatal;
//  - an uncaught exception is logged to stderr, then the process exits with code 1 (unless the
//    app listens for 'uncaughtException' itself).
// And, in a cluster worker, it drains HTTP connections when pm-runtime retires the worker (see
// drainOnDisconnect below).
'use strict';

(function pmRuntimePreload() {
  // Processes the app forks (child_process.fork, its own cluster.fork) inherit
  // process.execArgv. Under PM2 they do not inherit its container, so they must not inherit this
  // preload either: take our own `--require` out of what the app sees and passes on.
  const argv = process.execArgv;
  for (let i = argv.length - 2; i >= 0; i--) {
    if ((argv[i] === '--require' || argv[i] === '-r') && require('path').resolve(argv[i + 1]) === __filename) {
      argv.splice(i, 2);
    }
  }

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

  if (clusterMode) {
    try {
      if (require('cluster').isWorker) drainOnDisconnect();
    } catch (e) {
      writeErr('pm-runtime preload: cannot set up the HTTP drain: ' + text(e));
    }
  }

  // When pm-runtime retires this worker (a reload), Node's cluster worker closes its servers
  // and `server.close()` closes every connection it thinks idle at that instant: keep-alive
  // connections between two requests, and since Node 26 connections accepted whose request
  // has not been read yet. A client that had just sent a request on one gets ECONNRESET.
  // Instead, from the moment the worker is told to disconnect:
  //  - every response not yet started on a connection carries `Connection: close`, so the
  //    client opens its next connection elsewhere and this one ends after the response;
  //  - a connection is closed by us only once it has been idle (no request in progress) for a
  //    grace period, so a request already on its way is answered instead of reset.
  // The grace is a quarter of kill_timeout (the time pm-runtime gives the worker to leave),
  // between 100 ms and 1 s.
  function drainOnDisconnect() {
    const dc = require('diagnostics_channel');
    const http = require('http');
    const killTimeout = Number(env.kill_timeout) > 0 ? Number(env.kill_timeout) : 1600;
    const graceMs = Math.min(1000, Math.max(100, Math.floor(killTimeout / 4)));
    // HTTP connections of this worker: socket -> { responses in progress, idle since }.
    const conns = new Map();
    let draining = false;
    let sweep = null;

    const isHttp = (server) => server && typeof server.closeIdleConnections === 'function';
    const stateOf = (socket) => {
      let st = conns.get(socket);
      if (st === undefined) {
        st = { responses: new Set(), idleSince: Date.now() };
        conns.set(socket, st);
        socket.once('close', () => conns.delete(socket));
      }
      return st;
    };
    // Strong references: a channel without one may be collected on older Node versions.
    const channels = {
      socket: dc.channel('net.server.socket'),
      start: dc.channel('http.server.request.start'),
      finish: dc.channel('http.server.response.finish'),
    };
    channels.socket.subscribe(({ socket }) => {
      if (isHttp(socket.server)) stateOf(socket);
    });
    channels.start.subscribe(({ socket, response }) => {
      const st = stateOf(socket);
      st.responses.add(response);
      if (draining) response.shouldKeepAlive = false;
    });
    channels.finish.subscribe(({ socket, response }) => {
      const st = conns.get(socket);
      if (st === undefined) return;
      st.responses.delete(response);
      st.idleSince = Date.now();
    });

    // Closes connections that are truly idle: still an HTTP connection (not upgraded to a
    // websocket), nothing in progress, nothing for graceMs.
    const closeIdle = () => {
      const now = Date.now();
      for (const [socket, st] of conns) {
        if (!socket.parser || st.responses.size > 0 || now - st.idleSince < graceMs) continue;
        const pending = socket._httpMessage;
        if (pending && !pending.finished) continue;
        socket.destroy();
      }
    };
    const startDraining = () => {
      if (draining) return;
      draining = true;
      for (const st of conns.values()) {
        for (const res of st.responses) {
          if (!res.headersSent) res.shouldKeepAlive = false;
        }
      }
      sweep = setInterval(closeIdle, Math.max(25, Math.floor(graceMs / 4)));
      sweep.unref();
    };

    // The primary's `disconnect` arrives as an internal message; ours runs before the cluster
    // worker's own handler (which closes the servers at once).
    process.prependListener('internalMessage', (msg) => {
      if (msg && msg.cmd === 'NODE_CLUSTER' && msg.act === 'disconnect') startDraining();
    });
    // While draining, server.close() must not close "idle" connections at once (Node >= 19
    // does): the sweep above does it when they really are. A disconnect the app starts itself
    // (cluster.worker.disconnect()) is caught here too.
    const original = http.Server.prototype.closeIdleConnections;
    if (typeof original === 'function') {
      http.Server.prototype.closeIdleConnections = function closeIdleConnections() {
        const worker = require('cluster').worker;
        if (!draining && worker && worker.exitedAfterDisconnect === true) startDraining();
        if (draining) return;
        return original.apply(this, arguments);
      };
    }
  }
})();

// The start schedule: when many instances start at once, pm-runtime starts one per CPU first
// and the others once one of those is up. Up is when the app's main module has run (its servers
// listen, or in a cluster worker have asked to): the first turn of the event loop after it.
// Unref'd: an app that has nothing left to do exits as it would (pm-runtime sees the exit).
if (typeof process.send === 'function') {
  const once = setImmediate(function pmRuntimeStarted() {
    try {
      if (process.connected) process.send({ type: 'pm-runtime:started' });
    } catch (_) {
      // The channel is gone: the schedule does not wait for this instance for long.
    }
  });
  // Node, Bun and Deno have it; a runtime without it just runs the callback.
  if (once && typeof once.unref === 'function') once.unref();
}

// Hang watchdog (`watchdog: <ms>` in the ecosystem file; PM_RUNTIME_WATCHDOG_MS set by
// pm-runtime): a heartbeat from the main thread over the IPC channel, four times per watchdog
// period; pm-runtime restarts the process when heartbeats stop for the whole period. Node's
// own report-on-signal needs the event loop, so a small worker thread writes the blocked main
// thread's stack to stderr first (through the inspector, once it has been blocked for half
// the period).
(function pmRuntimeWatchdog() {
  const ms = Number(process.env.PM_RUNTIME_WATCHDOG_MS);
  // Processes the app starts must not think they are watched.
  delete process.env.PM_RUNTIME_WATCHDOG_MS;
  if (!(ms > 0) || typeof process.send !== 'function') {
    return;
  }
  const every = Math.max(50, Math.floor(ms / 4));
  let witness = null;
  try {
    const { Worker } = require('worker_threads');
    witness = new Worker(
      `const { parentPort, workerData } = require('worker_threads');
      const fs = require('fs');
      let last = Date.now();
      let done = false;
      parentPort.on('message', () => { last = Date.now(); done = false; });
      setInterval(() => {
        if (done || Date.now() - last < workerData.after) return;
        done = true;
        const s = new (require('inspector').Session)();
        try { s.connectToMainThread(); } catch (_) { return; }
        const urls = new Map();
        s.on('Debugger.scriptParsed', (m) => urls.set(m.params.scriptId, m.params.url));
        s.once('Debugger.paused', (m) => {
          const at = (f) => '    at ' + (f.functionName || '<anonymous>') + ' (' + (urls.get(f.location.scriptId) || f.url || '?') + ':' + (f.location.lineNumber + 1) + ':' + (f.location.columnNumber + 1) + ')';
          try { fs.writeSync(2, 'pm-runtime watchdog: the event loop has been blocked for ' + (Date.now() - last) + 'ms; main thread stack:\\n' + m.params.callFrames.map(at).join('\\n') + '\\n'); } catch (_) {}
          s.post('Debugger.resume', () => s.disconnect());
        });
        s.post('Debugger.enable', () => s.post('Debugger.pause'));
      }, workerData.check);`,
      { eval: true, workerData: { after: Math.floor(ms / 2), check: Math.max(20, Math.floor(every / 5)) } },
    );
    witness.unref();
  } catch (_) {
    // No worker threads or inspector: the restart still happens, without the stack.
  }
  // How late the heartbeat timer fires is the event loop's lag (pm_runtime_app_event_loop_lag_seconds).
  let due = Date.now();
  const beat = () => {
    const now = Date.now();
    const lag = Math.max(0, now - due);
    due = now + every;
    try {
      process.send({ type: 'pm-runtime:heartbeat', lag });
      if (witness) witness.postMessage(0);
    } catch (_) {
      // The channel is gone: nobody is watching any more.
    }
  };
  beat();
  setInterval(beat, every).unref();
})();
