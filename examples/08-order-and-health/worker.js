// A background worker; the watchdog restarts it if its event loop ever blocks for 10 s.
let n = 0;
console.log('worker: started');
const timer = setInterval(() => console.log(`worker: job ${++n} done`), 2000);
process.on('SIGINT', () => {
  clearInterval(timer);
  console.log('worker: stopping');
  process.exit(0);
});
