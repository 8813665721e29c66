// Every HTTP benchmark's scenario (bench/driver.py runs it): one text per request, a share of them
// repeated. The original system's load test is its default: 10 virtual users, 95% cache hits.
// Sentences: HOT (repeated: cached once warm) and COLD (made unique per request, so always a miss).
// RATE set: a fixed arrival rate instead (k6 constant-arrival-rate, RATE requests/s, same mix);
// requests k6 could not start in time are counted in dropped_iterations.
// BODY: the request shape, `text` (the transformer's routes, default), `instances` (v1 predict),
// `v2` (v2 infer tensors) or `v2-batched` (the same, shape [1, 1]), so the same mix drives the
// transformer, the predictor alone and Triton (bench/triton.py).
import http from 'k6/http';
import { check } from 'k6';

const RATE = Number(__ENV.RATE || 0);
const DURATION = __ENV.DURATION || '60s';
const load = RATE > 0
  ? {
    scenarios: {
      fixed_rate: {
        executor: 'constant-arrival-rate', rate: RATE, timeUnit: '1s', duration: DURATION,
        preAllocatedVUs: Number(__ENV.PRE_VUS || 60), maxVUs: Number(__ENV.MAX_VUS || 300),
      },
    },
  }
  : { vus: Number(__ENV.VUS || 10), duration: DURATION };

export const options = {
  ...load,
  summaryTrendStats: ['avg', 'min', 'med', 'p(90)', 'p(95)', 'p(99)', 'max'],
  // Always-true thresholds: they only make k6 report hits and misses separately.
  thresholds: {
    'http_req_duration{kind:hit}': ['max>=0'], 'http_req_duration{kind:miss}': ['max>=0'],
    'http_reqs{kind:hit}': ['count>=0'], 'http_reqs{kind:miss}': ['count>=0'],
  },
};

const HOT = JSON.parse(open(__ENV.HOT_FILE));
const COLD = JSON.parse(open(__ENV.COLD_FILE));
const HIT_RATIO = Number(__ENV.HIT_RATIO || 0.95);
const URL = __ENV.URL;
const HEADERS = { 'Content-Type': 'application/json' };
const BODIES = {
  text: (text) => ({ text: [text] }),
  instances: (text) => ({ instances: [text] }),
  v2: (text) => ({ inputs: [{ name: 'text', datatype: 'BYTES', shape: [1], data: [text] }] }),
  // A batching Triton model takes a batch dimension before each input's own dims, which may not be
  // empty ([1] for one text); the predictor reads [N, 1] as [N].
  'v2-batched': (text) => ({ inputs: [{ name: 'text', datatype: 'BYTES', shape: [1, 1], data: [text] }] }),
};
const BODY = BODIES[__ENV.BODY || 'text'];
if (!BODY) {
  throw new Error(`BODY must be one of ${Object.keys(BODIES).join(', ')}, not ${__ENV.BODY}`);
}

// Two labels per row, whatever the shape: v1 rows of {label, score}, or v2's probabilities tensor.
function twoLabels(r) {
  if (r.status !== 200) return false;
  const answer = JSON.parse(r.body);
  return answer.outputs
    ? answer.outputs.some((o) => o.name === 'probabilities' && o.shape[1] === 2)
    : answer.predictions[0].length === 2;
}

export default function () {
  const hit = Math.random() < HIT_RATIO;
  const text = hit
    ? HOT[Math.floor(Math.random() * HOT.length)]
    : `${COLD[Math.floor(Math.random() * COLD.length)]} (${__VU}-${__ITER})`;
  const res = http.post(URL, JSON.stringify(BODY(text)),
    { headers: HEADERS, tags: { name: 'predict', kind: hit ? 'hit' : 'miss' } });
  check(res, {
    'status 200': (r) => r.status === 200,
    'two labels': twoLabels,
  });
}
