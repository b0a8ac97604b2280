import { Body, Controller, Delete, Get, HttpCode, Param, Post, Query, Req } from '@nestjs/common';
import { ApiBody, ApiOperation, ApiResponse, ApiTags } from '@nestjs/swagger';
import { Request, Response } from 'express';
import { AppConfig } from '../config/app-config';
import { IdPipe } from '../common/id.pipe';
import { baseUrl } from '../common/request-url';
import { CreateInstancesDto, CreateInstancesQuery } from './dto/create-instances.dto';
import { ListInstancesQuery } from './dto/list-instances.query';
import { InstanceView, presentInstance } from './instance.presenter';
import { InstancesService } from './instances.service';

const setTotal = (request: Request, total: number) => (request.res as Response).setHeader('X-Total-Count', String(total));

@ApiTags('instances')
@Controller()
export class InstancesController {
  constructor(
    private readonly instances: InstancesService,
    private readonly config: AppConfig,
  ) {}

  @Get('instances')
  @ApiOperation({ summary: 'Instances, filtered by the original API state names (running by default); X-Total-Count gives the total.' })
  async list(@Query() query: ListInstancesQuery, @Req() request: Request): Promise<InstanceView[]> {
    const { items, total } = await this.instances.list(query.show ?? 'running', query.limit ?? 100, query.offset ?? 0);
    setTotal(request, total);
    const base = baseUrl(request);
    return items.map((instance) => presentInstance(this.config, base, instance));
  }

  @Post('instances')
  @ApiOperation({ summary: 'Creates instances within the limits (503 with Retry-After when a limit refuses).' })
  @ApiBody({ type: CreateInstancesDto, required: false })
  @ApiResponse({ status: 201, description: 'The instance (or a list when count was given), creating or, with wait, settled.' })
  @ApiResponse({ status: 503, description: 'A limit refuses the creation; the message names it.' })
  async create(
    @Body() body: CreateInstancesDto,
    @Query() query: CreateInstancesQuery,
    @Req() request: Request,
  ): Promise<InstanceView | InstanceView[]> {
    let instances = await this.instances.create(body.count ?? 1);
    if (query.wait) {
      instances = await this.instances.waitSettled(
        instances.map((instance) => instance.id),
        (query.timeout ?? 60) * 1000,
      );
    }
    const base = baseUrl(request);
    const views = instances.map((instance) => presentInstance(this.config, base, instance));
    return body.count === undefined ? views[0] : views;
  }

  @Get('instances/:id')
  async get(@Param('id', IdPipe) id: number, @Req() request: Request): Promise<InstanceView> {
    return presentInstance(this.config, baseUrl(request), await this.instances.get(id));
  }

  @Get('instances/:id/history')
  @ApiOperation({ summary: 'Every state change of the instance, with its time and reason.' })
  history(@Param('id', IdPipe) id: number) {
    return this.instances.history(id);
  }

  @Delete('instances/:id')
  @HttpCode(200)
  @ApiOperation({ summary: 'Ends its allocation if any, removes the container and frees its ports; the row is kept.' })
  async delete(@Param('id', IdPipe) id: number, @Req() request: Request): Promise<InstanceView> {
    return presentInstance(this.config, baseUrl(request), await this.instances.delete(id));
  }

  @Get('ports')
  @ApiOperation({ summary: 'The port range and who holds each port (all=true lists free ports too).' })
  ports(@Query('all') all?: string) {
    return this.instances.ports(all === 'true' || all === '1');
  }

  @Get('details')
  @ApiOperation({ summary: 'Limits, capacity per host and counts per state.' })
  details() {
    return this.instances.details();
  }
}
