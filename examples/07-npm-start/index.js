require('http').createServer((req, res) => res.end('started through npm start\n')).listen(process.env.PORT || 3300);
