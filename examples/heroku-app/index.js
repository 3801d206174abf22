// A Heroku-style web app: listens on $PORT.
const http = require('http');
http.createServer((req, res) => res.end(`hello from ${process.env.name} on dyno port ${process.env.PORT}\n`))
  .listen(process.env.PORT, () => console.log(`listening on ${process.env.PORT}`));
process.on('SIGINT', () => process.exit(0));
process.on('SIGTERM', () => process.exit(0));
