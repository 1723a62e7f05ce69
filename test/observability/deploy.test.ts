/**
 * deploy/ follows the health endpoints and the consumer naming (issue 11, item 5): the compose
 * healthcheck asks /readyz, the systemd unit waits for /healthz and does not restart a config
 * error (exit 2), and the compose file names the partition consumers as the pool does (`<durable>-p<n>-e<epoch>`,
 * `partitionConsumerName`).
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ROOT } from '../support/cli.js';

const compose = readFileSync(join(ROOT, 'deploy/compose.yaml'), 'utf8');
const unit = readFileSync(join(ROOT, 'deploy/systemd/http-destination@.service'), 'utf8');

describe('deploy/', () => {
  it('compose: the worker healthcheck asks /readyz on its admin port', () => {
    const worker = compose.slice(compose.indexOf('\n  worker:'), compose.indexOf('\nconfigs:'));
    expect(worker).toMatch(/"--metrics-port", "9464"/);
    expect(worker).toMatch(/healthcheck:\n\s+test: \[.*http:\/\/127\.0\.0\.1:9464\/readyz/);
  });
  it('compose: the consumer names in its comment are the pool\'s', () => {
    expect(compose).toMatch(/a durable consumer <durable>-p<n>-e<epoch>/);
    expect(compose).not.toMatch(/consumer <durable>-p<n>[^-]/);
  });
  it('systemd: started once /healthz answers; exit 2 (a config error) is not restarted', () => {
    expect(unit).toMatch(/^ExecStartPost=.*http:\/\/127\.0\.0\.1:%i\/healthz/m);
    expect(unit).toMatch(/^Restart=on-failure$/m);
    expect(unit).toMatch(/^RestartPreventExitStatus=2$/m);
    expect(unit).toMatch(/--metrics-port %i/);
  });
});
