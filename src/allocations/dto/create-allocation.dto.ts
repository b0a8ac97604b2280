import { ApiPropertyOptional } from '@nestjs/swagger';
import { IsInt, IsObject, IsOptional, IsString, Max, MaxLength, Min, MinLength } from 'class-validator';

export class CreateAllocationDto {
  @ApiPropertyOptional({
    description: 'Initial file: a URL (fetched into the cache on demand) or the filename of a cached file. The profile default when absent.',
    example: 'http://127.0.0.1:8000/labs/lab1.pkt',
  })
  @IsOptional()
  @IsString({ message: 'file must be a string' })
  @MinLength(1, { message: 'file must not be empty' })
  @MaxLength(2048, { message: 'file must be at most 2048 characters' })
  file?: string;

  @ApiPropertyOptional({ description: 'Lease length in seconds; the instance is taken back when it runs out.', minimum: 1 })
  @IsOptional()
  @IsInt({ message: 'leaseSeconds must be an integer' })
  @Min(1, { message: 'leaseSeconds must be at least 1' })
  @Max(365 * 86400, { message: 'leaseSeconds is too large' })
  leaseSeconds?: number;

  @ApiPropertyOptional({ description: 'Free-form string labels kept with the allocation.', example: { course: 'net101' } })
  @IsOptional()
  @IsObject({ message: 'labels must be an object of strings' })
  labels?: Record<string, string>;
}

export class RenewLeaseDto {
  @ApiPropertyOptional({ description: 'New lease length from now, in seconds (the allocation default when absent).', minimum: 1 })
  @IsOptional()
  @IsInt({ message: 'leaseSeconds must be an integer' })
  @Min(1, { message: 'leaseSeconds must be at least 1' })
  @Max(365 * 86400, { message: 'leaseSeconds is too large' })
  leaseSeconds?: number;
}
