console.log(`message: ${process.env.MESSAGE} (NODE_ENV=${process.env.NODE_ENV})`);
