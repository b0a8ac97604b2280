import 'reflect-metadata';
import { LogLevel, ValidationPipe } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { NestExpressApplication } from '@nestjs/platform-express';
import { DocumentBuilder, SwaggerModule } from '@nestjs/swagger';
import { AppModule } from './app.module';
import { AppConfig, loadConfig } from './config/app-config';
import { ConfigError } from './config/env-reader';
import { HttpExceptionFilter } from './common/http-exception.filter';

const LEVELS: LogLevel[] = ['fatal', 'error', 'warn', 'log', 'debug', 'verbose'];

export function logLevels(level: AppConfig['logLevel']): LogLevel[] {
  return LEVELS.slice(0, LEVELS.indexOf(level) + 1);
}

/** Applies the HTTP conventions shared by the server and the tests. */
export function configureHttp(app: NestExpressApplication, config: AppConfig): void {
  app.set('trust proxy', config.http.trustProxy);
  app.useBodyParser('json', { limit: '64kb' });
  app.useBodyParser('text', { limit: '16kb', type: 'text/plain' });
  app.useGlobalFilters(new HttpExceptionFilter());
  app.useGlobalPipes(new ValidationPipe({ whitelist: true, forbidNonWhitelisted: true, transform: true }));
  const document = SwaggerModule.createDocument(
    app,
    new DocumentBuilder()
      .setTitle('pt-instance-manager')
      .setDescription(
        'Keeps a warm pool of isolated containers (instances) and hands each one out, exclusively, to one session (allocation).',
      )
      .setVersion('1')
      .build(),
  );
  SwaggerModule.setup('apidocs', app, document, { jsonDocumentUrl: 'apidocs/openapi.json' });
}

async function bootstrap(): Promise<void> {
  let config: AppConfig;
  try {
    config = loadConfig();
  } catch (error) {
    if (error instanceof ConfigError) {
      process.stderr.write(`pt-instance-manager: invalid configuration: ${error.message}\n`);
      process.exit(2);
    }
    throw error;
  }
  const app = await NestFactory.create<NestExpressApplication>(AppModule.forRole(config), {
    logger: logLevels(config.logLevel),
    bodyParser: false,
  });
  app.enableShutdownHooks();
  configureHttp(app, config);
  await app.listen(config.http.port, config.http.host);
  process.stdout.write(`pt-instance-manager (${config.role}) listening on http://${config.http.host}:${config.http.port}\n`);
}

if (require.main === module) {
  void bootstrap();
}
