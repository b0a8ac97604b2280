import { ApiPropertyOptional } from '@nestjs/swagger';
import { IsIn, IsOptional } from 'class-validator';
import { PaginationQuery } from '../../common/pagination.dto';

export const INSTANCE_FILTERS = ['all', 'starting', 'deallocated', 'allocated', 'running', 'finished', 'error'] as const;
export type InstanceFilter = (typeof INSTANCE_FILTERS)[number];

export class ListInstancesQuery extends PaginationQuery {
  @ApiPropertyOptional({ enum: INSTANCE_FILTERS, default: 'running' })
  @IsOptional()
  @IsIn(INSTANCE_FILTERS, { message: `show must be one of ${INSTANCE_FILTERS.join(', ')}` })
  show?: InstanceFilter;
}
