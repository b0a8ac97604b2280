import { Module } from '@nestjs/common';
import { AllocationsController } from './allocations/allocations.controller';
import { AllocationsModule } from './allocations/allocations.module';
import { FilesController } from './files/files.controller';
import { FilesModule } from './files/files.module';
import { MonitorController } from './health/monitor.controller';
import { InstancesController } from './instances/instances.controller';
import { InstancesModule } from './instances/instances.module';
import { RootController } from './root.controller';

/** The API role: HTTP controllers that read rows, write requests and enqueue jobs. */
@Module({
  imports: [InstancesModule, AllocationsModule, FilesModule],
  controllers: [RootController, InstancesController, AllocationsController, MonitorController, FilesController],
})
export class ApiModule {}
