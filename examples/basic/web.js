// A tiny HTTP API: answers on $PORT (3000 by default) with who served the request.
const http = require('http');
const port = Number(process.env.PORT || 3000);
const server = http.createServer((req, res) => {
  res.setHeader('content-type', 'application/json');
  res.end(JSON.stringify({ app: process.env.name, instance: process.env.NODE_APP_INSTANCE, pid: process.pid, url: req.url }) + '\n');
});
server.listen(port, () => {
  console.log(`web: listening on port ${port} (pid ${process.pid})`);
  if (process.send) process.send('ready');
});
process.on('SIGINT', () => {
  console.log('web: SIGINT received, closing the server');
  server.close(() => process.exit(0));
});
