import Bull, { Job } from 'bull';
import { HIGH_QUEUE, NORMAL_QUEUE, NormalJob, QUEUE_SETTINGS } from '../src/queues/queue.constants';
import { QueueProducer } from '../src/queues/queue.producer';
import { redisOptions } from '../src/queues/redis-options';
import { TEST_NAMESPACE, testEnv } from './support/env';
import { eventually } from './support/harness';

describe('queues (real Redis)', () => {
  const options = { redis: redisOptions(testEnv().REDIS_URL!), prefix: `${TEST_NAMESPACE}-queues`, settings: QUEUE_SETTINGS };
  const high = new Bull(HIGH_QUEUE, options);
  const normal = new Bull(NORMAL_QUEUE, options);
  const producer = new QueueProducer(high, normal);

  beforeAll(async () => {
    await Promise.all([high.isReady(), normal.isReady()]);
    await Promise.all([high.obliterate({ force: true }), normal.obliterate({ force: true })]);
  });

  afterAll(async () => {
    await Promise.all([high.obliterate({ force: true }), normal.obliterate({ force: true })]);
    await Promise.all([high.close(), normal.close()]);
  });

  it('queues a request again under the same job id once its previous run failed', async () => {
    const runs: string[] = [];
    void normal.process(NormalJob.Restart, 1, (job: Job) => {
      runs.push(String(job.id));
      return Promise.reject(new Error('the engine refused'));
    });
    await producer.restart({ instanceId: 7 }, 0);
    await eventually(async () => {
      const job = await normal.getJob('restart-7-0');
      return runs.length === 1 && (job === null || (await job.isFailed()));
    }, 5000, 'the first run to fail');
    // What the monitor does on its next pass: the same request, the same deterministic id.
    await producer.restart({ instanceId: 7 }, 0);
    await eventually(async () => runs.length === 2, 5000, 'the same job id to run again');
    expect(runs).toEqual(['restart-7-0', 'restart-7-0']);
  });
});
