// A tiny web app: every worker listens on $PORT (pm-runtime hands them one shared socket).
const http = require('http');
const cluster = require('cluster');
const worker = cluster.isWorker ? cluster.worker.id : 0;
http
  .createServer((req, res) => res.end(`hello from worker ${worker} (pid ${process.pid}) on port ${process.env.PORT}\n`))
  .listen(process.env.PORT || 3000);
