// The sidecar: a TCP proxy in front of web (PORT -> UPSTREAM), like an envoy or a cloud SQL proxy.
const net = require('net');
net
  .createServer((client) => {
    const upstream = net.connect(Number(process.env.UPSTREAM), '127.0.0.1');
    client.pipe(upstream).pipe(client);
    const close = () => { client.destroy(); upstream.destroy(); };
    client.on('error', close);
    upstream.on('error', close);
  })
  .listen(process.env.PORT, () => console.log(`proxy: listening on ${process.env.PORT}`));
process.on('SIGINT', () => {
  console.log('proxy: stopping (last)');
  process.exit(0);
});
