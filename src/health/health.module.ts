import { Module } from '@nestjs/common';
import { TerminusModule } from '@nestjs/terminus';
import { HealthController } from './health.controller';
import { DockerHealthIndicator, PostgresHealthIndicator, RedisHealthIndicator } from './indicators';

@Module({
  imports: [TerminusModule.forRoot({ logger: false })],
  controllers: [HealthController],
  providers: [PostgresHealthIndicator, RedisHealthIndicator, DockerHealthIndicator],
})
export class HealthModule {}
