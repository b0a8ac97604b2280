import { Module } from '@nestjs/common';
import { CapacityService } from './capacity.service';
import { HostUsageService } from './host-usage.service';
import { InstanceLifecycleService } from './instance-lifecycle.service';
import { InstanceStore } from './instance.store';
import { InstancesService } from './instances.service';
import { PoolService } from './pool.service';
import { WorkloadClient } from './workload-client';

/** Instance rows and life cycle; the controller is mounted by the API role, the lifecycle used by workers. */
@Module({
  providers: [CapacityService, InstanceStore, InstancesService, InstanceLifecycleService, HostUsageService, WorkloadClient, PoolService],
  exports: [CapacityService, InstanceStore, InstancesService, InstanceLifecycleService, HostUsageService, WorkloadClient, PoolService],
})
export class InstancesModule {}
