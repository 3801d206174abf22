console.log(`${process.env.name} started with ROLE=${process.env.ROLE}`);
setInterval(() => console.log(`${process.env.name} working`), 5000);
process.on('SIGINT', () => process.exit(0));
