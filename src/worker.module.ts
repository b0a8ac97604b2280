import { Module } from '@nestjs/common';
import { AllocationsModule } from './allocations/allocations.module';
import { LeaderElectionService } from './health/leader-election.service';
import { MonitorScheduler } from './health/monitor.scheduler';
import { MonitorService } from './health/monitor.service';
import { InstancesModule } from './instances/instances.module';
import { QueueWorkersService } from './queues/queue-workers.service';

/** The worker role: queue processors and the monitor, the only code that reaches Docker. */
@Module({
  imports: [InstancesModule, AllocationsModule],
  providers: [QueueWorkersService, MonitorService, MonitorScheduler, LeaderElectionService],
  exports: [MonitorService],
})
export class WorkerModule {}
