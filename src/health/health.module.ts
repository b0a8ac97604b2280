import { Global, Module } from '@nestjs/common';
import { TerminusModule } from '@nestjs/terminus';
import { HealthController } from './health.controller';
import { MetricsController } from './metrics.controller';
import { MetricsService } from './metrics.service';
import { DockerHealthIndicator, PostgresHealthIndicator, RedisHealthIndicator } from './indicators';

/** Service health, metrics; HealthModule is global so any module can record metrics. */
@Global()
@Module({
  imports: [TerminusModule.forRoot({ logger: false })],
  controllers: [HealthController, MetricsController],
  providers: [PostgresHealthIndicator, RedisHealthIndicator, DockerHealthIndicator, MetricsService],
  exports: [MetricsService],
})
export class HealthModule {}
