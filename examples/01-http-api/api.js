// A small HTTP API: every instance listens on PORT; in cluster mode they share it.
const http = require('http');
const port = Number(process.env.PORT || 3000);
http.createServer((req, res) => {
  res.setHeader('content-type', 'application/json');
  res.end(JSON.stringify({ hello: 'world', instance: process.env.NODE_APP_INSTANCE, pid: process.pid }) + '\n');
}).listen(port, () => console.log(`api listening on ${port}`));
process.on('SIGINT', () => process.exit(0));
