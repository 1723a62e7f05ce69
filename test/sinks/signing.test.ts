import { describe, it, expect } from 'vitest';
import { createHmac } from 'node:crypto';
import { signWebhook, verifyWebhook } from '../../src/sinks/http/signing.js';

// An independent reading of the Standard Webhooks spec: the key is the base64 after `whsec_`,
// the signed content is `${id}.${timestamp}.${body}`, the header is `v1,<base64 HMAC-SHA256>`.
function referenceSign(secret: string, id: string, ts: number, body: string): string {
  const key = Buffer.from(secret.split('_')[1]!, 'base64');
  const mac = createHmac('sha256', key).update(`${id}.${ts}.${body}`).digest('base64');
  return `v1,${mac}`;
}

const SECRET_A = 'whsec_' + Buffer.from('a very secret key, 32 bytes long').toString('base64');
const SECRET_B = 'whsec_' + Buffer.from('another key for rotation purposes').toString('base64');
const id = 'flow-1:p-1:js:PROFILES:17';
const ts = 1_764_151_200;
const body = JSON.stringify({ person: { name: { firstName: 'John' } } });
const now = ts * 1000;

describe('signWebhook', () => {
  it('matches an independent implementation of the spec', () => {
    expect(signWebhook({ secrets: [SECRET_A], id, timestamp: ts, body })).toBe(referenceSign(SECRET_A, id, ts, body));
  });

  it('matches the example of the Standard Webhooks reference libraries', () => {
    // published test vector of standard-webhooks (svix) libraries
    const sig = signWebhook({
      secrets: ['whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw'],
      id: 'msg_p5jXN8AQM9LWM0D4loKWxJek',
      timestamp: 1614265330,
      body: '{"test": 2432232314}',
    });
    expect(sig).toBe('v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=');
  });

  it('gives one space-separated signature per secret, in order', () => {
    const sig = signWebhook({ secrets: [SECRET_A, SECRET_B], id, timestamp: ts, body });
    expect(sig).toBe(`${referenceSign(SECRET_A, id, ts, body)} ${referenceSign(SECRET_B, id, ts, body)}`);
  });
});

describe('verifyWebhook', () => {
  const signature = signWebhook({ secrets: [SECRET_A], id, timestamp: ts, body });

  it('accepts the signed message', () => {
    expect(verifyWebhook({ secrets: [SECRET_A], id, timestamp: ts, body, signature, now })).toBe(true);
    expect(verifyWebhook({ secrets: [SECRET_A], id, timestamp: String(ts), body, signature, now })).toBe(true);
  });

  it('rejects a tampered body, id or timestamp', () => {
    expect(verifyWebhook({ secrets: [SECRET_A], id, timestamp: ts, body: body.replace('John', 'Jane'), signature, now })).toBe(false);
    expect(verifyWebhook({ secrets: [SECRET_A], id: 'other', timestamp: ts, body, signature, now })).toBe(false);
    expect(verifyWebhook({ secrets: [SECRET_A], id, timestamp: ts + 1, body, signature, now })).toBe(false);
  });

  it('rejects a wrong secret and accepts any of several', () => {
    expect(verifyWebhook({ secrets: [SECRET_B], id, timestamp: ts, body, signature, now })).toBe(false);
    expect(verifyWebhook({ secrets: [SECRET_B, SECRET_A], id, timestamp: ts, body, signature, now })).toBe(true);
    const both = signWebhook({ secrets: [SECRET_A, SECRET_B], id, timestamp: ts, body });
    expect(verifyWebhook({ secrets: [SECRET_B], id, timestamp: ts, body, signature: both, now })).toBe(true);
  });

  it('rejects a timestamp outside the tolerance', () => {
    expect(verifyWebhook({ secrets: [SECRET_A], id, timestamp: ts, body, signature, now: now + 301_000 })).toBe(false);
    expect(verifyWebhook({ secrets: [SECRET_A], id, timestamp: ts, body, signature, now: now + 299_000 })).toBe(true);
    expect(
      verifyWebhook({ secrets: [SECRET_A], id, timestamp: ts, body, signature, now: now + 3_600_000, toleranceSeconds: 7_200 }),
    ).toBe(true);
  });

  it('rejects garbage signatures', () => {
    expect(verifyWebhook({ secrets: [SECRET_A], id, timestamp: ts, body, signature: 'v1,AAAA v2,zzz', now })).toBe(false);
    expect(verifyWebhook({ secrets: [SECRET_A], id, timestamp: 'soon', body, signature, now })).toBe(false);
  });
});
