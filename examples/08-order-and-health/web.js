// The web app: answers from the migrated database; /healthz is its probes' endpoint.
const fs = require('fs');
const http = require('http');
const db = JSON.parse(fs.readFileSync('db.json', 'utf8'));
http
  .createServer((req, res) => {
    if (req.url === '/healthz') {
      res.writeHead(db.schema === 2 ? 200 : 503).end('ok\n');
      return;
    }
    res.end(`hello from web (schema ${db.schema})\n`);
  })
  .listen(process.env.PORT, () => console.log(`web: listening on ${process.env.PORT}`));
process.on('SIGINT', () => {
  console.log('web: stopping');
  process.exit(0);
});
