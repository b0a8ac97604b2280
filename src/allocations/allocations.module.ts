import { Module } from '@nestjs/common';
import { FilesModule } from '../files/files.module';
import { InstancesModule } from '../instances/instances.module';
import { AllocationWaiter } from './allocation-waiter';
import { AllocationWorkerService } from './allocation-worker.service';
import { AllocationStore } from './allocation.store';
import { AllocationsService } from './allocations.service';

@Module({
  imports: [InstancesModule, FilesModule],
  providers: [AllocationStore, AllocationsService, AllocationWaiter, AllocationWorkerService],
  exports: [AllocationStore, AllocationsService, AllocationWorkerService],
})
export class AllocationsModule {}
