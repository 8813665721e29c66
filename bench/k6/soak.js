// The fault soak's load (bench/soak.py breaks Redis and the predictor meanwhile): VUS closed-loop
// clients for DURATION, each request 1-4 texts from POOL_FILE, one request in ten with one text
// never seen before. Every answer is logged (texts, status, body, start and end in epoch ms) for
// soak.py to check against the predictor.
import http from 'k6/http';

export const options = { vus: Number(__ENV.VUS || 16), duration: __ENV.DURATION || '120s' };

const POOL = JSON.parse(open(__ENV.POOL_FILE));
const HEADERS = { 'Content-Type': 'application/json' };

function pick() {
  return POOL[Math.floor(Math.random() * POOL.length)];
}

export default function () {
  const texts = [...new Set(Array.from({ length: 1 + Math.floor(Math.random() * 4) }, pick))];
  if (Math.random() < 0.1) texts.push(`${pick()} ${__VU}-${__ITER}-${Date.now()}`);
  const start = Date.now();
  const res = http.post(__ENV.URL, JSON.stringify({ text: texts }), { headers: HEADERS, timeout: '120s' });
  console.log(JSON.stringify({ texts, status: res.status, body: res.body, start, end: Date.now() }));
}
