// Node: 1.5 M objects in a Map, 1 in 64 kept; GC; wait; signal idle.
const wait = Number(process.argv[2] || 0);
let recs = new Map();
for (let i = 0; i < 1500000; i++) recs.set(i, { id: i, name: "user" + i, tags: ["a" + (i % 97), "b"] });
for (const k of recs.keys()) if (k % 64) recs.delete(k);
if (global.gc) global.gc();
setTimeout(() => { if (process.env.HUGEGUARD_INSPECT_PID) process.kill(Number(process.env.HUGEGUARD_INSPECT_PID), "SIGUSR1"); setInterval(() => {}, 60000); }, wait * 1000);
