// A small HTTP API that logs one JSON line per request (its `level` becomes the OTLP severity).
const http = require('http');
http
  .createServer((req, res) => {
    console.log(JSON.stringify({ level: 'info', msg: 'request', path: req.url }));
    res.end(`hello from ${process.env.OTEL_SERVICE_NAME} (${process.env.OTEL_RESOURCE_ATTRIBUTES})\n`);
  })
  .listen(process.env.PORT || 3000);
