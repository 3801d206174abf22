const http = require('http');
http.createServer((req, res) => res.end(`served by ${process.pid}\n`)).listen(process.env.PORT || 3000);
