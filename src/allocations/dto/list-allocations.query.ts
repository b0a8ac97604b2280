import { ApiPropertyOptional } from '@nestjs/swagger';
import { IsIn, IsOptional } from 'class-validator';
import { PaginationQuery } from '../../common/pagination.dto';

export const ALLOCATION_FILTERS = ['current', 'finished', 'all'] as const;
export type AllocationFilter = (typeof ALLOCATION_FILTERS)[number];

export class ListAllocationsQuery extends PaginationQuery {
  @ApiPropertyOptional({ enum: ALLOCATION_FILTERS, default: 'current' })
  @IsOptional()
  @IsIn(ALLOCATION_FILTERS, { message: `show must be one of ${ALLOCATION_FILTERS.join(', ')}` })
  show?: AllocationFilter;
}
