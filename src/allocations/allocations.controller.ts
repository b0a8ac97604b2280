import { Body, Controller, Delete, Get, Headers, HttpCode, Param, Post, Query, Req, Res } from '@nestjs/common';
import { ApiBody, ApiHeader, ApiOperation, ApiResponse, ApiTags } from '@nestjs/swagger';
import { Request, Response } from 'express';
import { AppConfig } from '../config/app-config';
import { DomainError } from '../common/errors';
import { IdPipe } from '../common/id.pipe';
import { MetricsService } from '../health/metrics.service';
import { baseUrl } from '../common/request-url';
import { AllocationView, presentAllocation } from './allocation.presenter';
import { AllocationsService } from './allocations.service';
import { CreateAllocationDto, RenewLeaseDto } from './dto/create-allocation.dto';
import { ListAllocationsQuery } from './dto/list-allocations.query';

@ApiTags('allocations')
@Controller('allocations')
export class AllocationsController {
  constructor(
    private readonly allocations: AllocationsService,
    private readonly config: AppConfig,
    private readonly metrics: MetricsService,
  ) {}

  @Post()
  @ApiOperation({ summary: 'Hands out an instance, exclusively, ready with the initial file loaded.' })
  @ApiBody({ type: CreateAllocationDto, required: false })
  @ApiHeader({ name: 'Idempotency-Key', required: false, description: 'The same key returns the same allocation.' })
  @ApiHeader({ name: 'Prefer', required: false, description: 'respond-async: answer 202 at once and poll the allocation URL.' })
  @ApiResponse({ status: 201, description: 'The active allocation: packetTracer is host:port of the app.' })
  @ApiResponse({ status: 202, description: 'Accepted (Prefer: respond-async); poll the url.' })
  @ApiResponse({ status: 503, description: 'No instance can be had now (Retry-After says when to try again).' })
  @ApiResponse({ status: 500, description: 'The container engine failed.' })
  async create(
    @Body() body: CreateAllocationDto,
    @Headers('idempotency-key') idempotencyKey: string | undefined,
    @Headers('prefer') prefer: string | undefined,
    @Req() request: Request,
    @Res({ passthrough: true }) response: Response,
  ): Promise<AllocationView> {
    const respondAsync = /(^|[,;\s])respond-async($|[,;\s])/i.test(prefer ?? '');
    const started = process.hrtime.bigint();
    const seconds = () => Number(process.hrtime.bigint() - started) / 1e9;
    let outcome;
    try {
      outcome = await this.allocations.allocate(body ?? {}, idempotencyKey, respondAsync);
    } catch (error) {
      this.metrics.observeAllocation(error instanceof DomainError ? String(error.status) : '500', seconds());
      throw error;
    }
    this.metrics.observeAllocation(outcome.allocation.state === 'pending' ? 'accepted' : outcome.allocation.state, seconds());
    const view = presentAllocation(this.config, baseUrl(request), outcome.allocation, outcome.instance);
    response.setHeader('Location', view.url);
    if (outcome.allocation.state === 'pending') response.status(202);
    else response.status(outcome.created ? 201 : 200);
    return view;
  }

  @Get()
  @ApiOperation({ summary: 'Allocations: current (default), finished or all; X-Total-Count gives the total.' })
  async list(@Query() query: ListAllocationsQuery, @Req() request: Request, @Res({ passthrough: true }) response: Response): Promise<AllocationView[]> {
    const { items, instances, total } = await this.allocations.list(query.show ?? 'current', query.limit ?? 100, query.offset ?? 0);
    response.setHeader('X-Total-Count', String(total));
    const base = baseUrl(request);
    return items.map((item) => presentAllocation(this.config, base, item, item.instanceId === null ? null : (instances.get(item.instanceId) ?? null)));
  }

  @Get(':id')
  async get(@Param('id', IdPipe) id: number, @Req() request: Request): Promise<AllocationView> {
    const { allocation, instance } = await this.allocations.get(id);
    return presentAllocation(this.config, baseUrl(request), allocation, instance);
  }

  @Get(':id/history')
  @ApiOperation({ summary: 'Every state change of the allocation, with its time and reason.' })
  history(@Param('id', IdPipe) id: number) {
    return this.allocations.history(id);
  }

  @Delete(':id')
  @HttpCode(200)
  @ApiOperation({ summary: 'Ends the allocation; the instance is reset and returned to the pool. A second DELETE answers the same.' })
  async delete(@Param('id', IdPipe) id: number, @Req() request: Request): Promise<AllocationView> {
    const { allocation, instance } = await this.allocations.deallocate(id);
    return presentAllocation(this.config, baseUrl(request), allocation, instance);
  }

  @Post(':id/lease')
  @HttpCode(200)
  @ApiOperation({ summary: 'Renews the lease of an active allocation from now (409 when not active).' })
  @ApiBody({ type: RenewLeaseDto, required: false })
  async renew(@Param('id', IdPipe) id: number, @Body() body: RenewLeaseDto, @Req() request: Request): Promise<AllocationView> {
    const { allocation, instance } = await this.allocations.renew(id, body?.leaseSeconds);
    return presentAllocation(this.config, baseUrl(request), allocation, instance);
  }
}
