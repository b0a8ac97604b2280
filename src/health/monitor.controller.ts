import { Controller, HttpCode, Post } from '@nestjs/common';
import { ApiOperation, ApiTags } from '@nestjs/swagger';
import { ServiceUnavailableError } from '../common/errors';
import { QueueProducer } from '../queues/queue.producer';
import { MonitorReport } from './monitor.service';

const WAIT_MS = 60000;

@ApiTags('admin')
@Controller('admin')
export class MonitorController {
  constructor(private readonly queues: QueueProducer) {}

  @Post('monitor')
  @HttpCode(200)
  @ApiOperation({ summary: 'Runs one monitor pass now (through a worker) and answers its report.' })
  async run(): Promise<MonitorReport> {
    const job = await this.queues.monitor();
    let timer: NodeJS.Timeout | undefined;
    try {
      const result = (await Promise.race([
        job.finished() as Promise<string>,
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new ServiceUnavailableError('no worker finished the monitor pass in time')), WAIT_MS);
        }),
      ])) as string;
      return JSON.parse(result) as MonitorReport;
    } finally {
      clearTimeout(timer);
    }
  }
}
