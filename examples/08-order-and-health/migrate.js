// The init job: "migrates" the database file to schema 2, then exits 0.
const fs = require('fs');
setTimeout(() => {
  fs.writeFileSync('db.json', JSON.stringify({ schema: 2, migrated_at: new Date().toISOString() }));
  console.log('migrate: schema 2 written to db.json');
}, 300);
