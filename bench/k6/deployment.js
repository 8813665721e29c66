// The original load test's shape against your own deployment: 10 virtual users for 60 s, 95% of
// requests repeat a small set of texts (cache hits once warm), 5% send a text never seen before.
//
//   BASE=https://sentiment.example.com k6 run bench/k6/deployment.js
//
// Environment (all optional but BASE):
//   BASE        service URL, no trailing slash
//   ROUTE       bulk (POST /bulk-predict, default) or v1 (POST /v1/models/<MODEL>:predict)
//   MODEL       model name for the v1 route (sentiment)
//   HOST        Host header, when BASE is an ingress address rather than the service's name
//               (Knative routes by host: sentiment.<namespace>.<domain>)
//   TOKEN       sent as "Authorization: Bearer <TOKEN>"
//   VUS, DURATION, HIT_RATIO   10, 60s, 0.95
// Fails (exit code 99) if more than 1% of requests fail or p99 is over 2 s (the original's p99).
import http from 'k6/http';
import { check } from 'k6';

const BASE = __ENV.BASE;
if (!BASE) {
  throw new Error('set BASE, e.g. BASE=https://sentiment.example.com k6 run bench/k6/deployment.js');
}
const ROUTE = __ENV.ROUTE || 'bulk';
if (ROUTE !== 'bulk' && ROUTE !== 'v1') {
  throw new Error(`ROUTE must be bulk or v1, not ${ROUTE}`);
}
const URL = ROUTE === 'bulk'
  ? `${BASE}/bulk-predict`
  : `${BASE}/v1/models/${__ENV.MODEL || 'sentiment'}:predict`;
const HIT_RATIO = Number(__ENV.HIT_RATIO || 0.95);
const HEADERS = { 'Content-Type': 'application/json' };
if (__ENV.HOST) HEADERS.Host = __ENV.HOST;
if (__ENV.TOKEN) HEADERS.Authorization = `Bearer ${__ENV.TOKEN}`;

export const options = {
  vus: Number(__ENV.VUS || 10),
  duration: __ENV.DURATION || '60s',
  summaryTrendStats: ['avg', 'min', 'med', 'p(95)', 'p(99)', 'max'],
  thresholds: {
    http_req_failed: ['rate<0.01'],
    http_req_duration: ['p(99)<2000'],
    // Always true: they only make k6 report repeated (hit) and new (miss) texts separately.
    'http_req_duration{kind:hit}': ['max>=0'],
    'http_req_duration{kind:miss}': ['max>=0'],
  },
};

// The repeated texts: short reviews, as the original test sent.
const HOT = [
  'I love this movie', 'This was a terrible waste of time', 'An instant classic',
  'The plot made no sense at all', 'Beautifully shot and well acted', 'I fell asleep halfway through',
  'A warm, funny and moving film', 'The dialogue was painfully bad', 'One of the best films this year',
  'Not worth the ticket price', 'The soundtrack is wonderful', 'Too long and far too slow',
  'A clever script with real heart', 'The ending ruined everything', 'Great performances all around',
  'Predictable from start to finish', 'I would happily watch it again', 'The characters were flat and dull',
  'A delightful surprise', 'Messy, loud and forgettable',
];
const WORDS = ['story', 'acting', 'pacing', 'music', 'camera', 'ending', 'cast', 'script', 'humour', 'tension'];

function body(text) {
  return JSON.stringify(ROUTE === 'bulk' ? { text: [text] } : { instances: [text] });
}

// Every repeated text once before the test, so the repeated share is answered from the cache.
export function setup() {
  const res = http.post(URL, JSON.stringify(ROUTE === 'bulk' ? { text: HOT } : { instances: HOT }),
    { headers: HEADERS, timeout: '120s', tags: { name: 'warm-up' } });
  if (res.status !== 200) {
    throw new Error(`warm-up request to ${URL} answered ${res.status}: ${res.body}`);
  }
  return { run: Date.now() };
}

export default function (data) {
  const hit = Math.random() < HIT_RATIO;
  const text = hit
    ? HOT[Math.floor(Math.random() * HOT.length)]
    : `The ${WORDS[__ITER % WORDS.length]} was fine (${data.run}-${__VU}-${__ITER})`;
  const res = http.post(URL, body(text), { headers: HEADERS, tags: { name: ROUTE, kind: hit ? 'hit' : 'miss' } });
  check(res, {
    'status 200': (r) => r.status === 200,
    'one row of labels': (r) => r.status === 200 && JSON.parse(r.body).predictions.length === 1,
  });
}
