import { Global, Module } from '@nestjs/common';
import { ContainerDriver } from './container-driver';
import { DockerContainerDriver } from './docker-container.driver';

@Global()
@Module({
  providers: [{ provide: ContainerDriver, useClass: DockerContainerDriver }],
  exports: [ContainerDriver],
})
export class ContainerDriverModule {}
