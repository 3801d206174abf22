// A small HTTP API. Each instance listens on its own PORT (increment_var), so fork-mode scaling works.
const http = require('http');
const port = Number(process.env.PORT || 3000);
http.createServer((req, res) => {
  res.setHeader('content-type', 'application/json');
  res.end(JSON.stringify({ hello: 'world', instance: process.env.NODE_APP_INSTANCE, pid: process.pid }) + '\n');
}).listen(port, () => console.log(`api listening on ${port}`));
process.on('SIGINT', () => process.exit(0));
