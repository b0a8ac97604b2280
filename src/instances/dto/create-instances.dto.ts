import { ApiPropertyOptional } from '@nestjs/swagger';
import { Transform, Type } from 'class-transformer';
import { IsBoolean, IsInt, IsOptional, Max, Min } from 'class-validator';

export class CreateInstancesDto {
  @ApiPropertyOptional({ minimum: 1, maximum: 100, default: 1, description: 'How many instances to create.' })
  @IsOptional()
  @IsInt({ message: 'count must be an integer' })
  @Min(1, { message: 'count must be at least 1' })
  @Max(100, { message: 'count must be at most 100' })
  count?: number;
}

export class CreateInstancesQuery {
  @ApiPropertyOptional({ description: 'Answer only once the instances are idle (or in error).', default: false })
  @IsOptional()
  @Transform(({ value }: { value: unknown }) => (value === 'true' || value === '1' ? true : value === 'false' || value === '0' ? false : value))
  @IsBoolean({ message: 'wait must be true or false' })
  wait?: boolean;

  @ApiPropertyOptional({ minimum: 1, maximum: 600, default: 60, description: 'Seconds to wait at most.' })
  @IsOptional()
  @Type(() => Number)
  @IsInt({ message: 'timeout must be an integer' })
  @Min(1, { message: 'timeout must be at least 1' })
  @Max(600, { message: 'timeout must be at most 600' })
  timeout?: number;
}
