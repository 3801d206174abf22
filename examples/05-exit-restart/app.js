// GET /exit makes the process exit; pm-runtime starts it again.
const http = require('http');
http.createServer((req, res) => {
  if (req.url === '/exit') {
    res.end('exiting\n', () => process.exit(1));
    return;
  }
  res.end(`alive, pid ${process.pid}\n`);
}).listen(process.env.PORT || 3200, () => console.log(`listening on ${process.env.PORT || 3200}`));
