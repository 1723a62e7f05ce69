import { range, lastValueFrom, toArray } from 'rxjs';
import { rateLimit } from '/work/wt/chain/dist/operators/rate-limit.js';
import { tokenBucket } from '/work/wt/chain/dist/stores/memory-rate-limiter.js';
const limiter = tokenBucket({ rate: 50 });
const t0 = Date.now();
const out = await lastValueFrom(range(0, 200).pipe(rateLimit({ limiter }), toArray()));
console.log(out.length, Date.now() - t0);
