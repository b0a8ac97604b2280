import { ApiPropertyOptional } from '@nestjs/swagger';
import { IsOptional, IsString, MaxLength, MinLength } from 'class-validator';

export class FileQuery {
  @ApiPropertyOptional({
    description: 'One file: its URL, its path inside the containers or its name in the cache (instead of the path parameter).',
    example: 'http://files.example.org/labs/lab1.pkt',
  })
  @IsOptional()
  @IsString({ message: 'url must be given once, as a string' })
  @MinLength(1, { message: 'url must not be empty' })
  @MaxLength(2048, { message: 'url must be at most 2048 characters' })
  url?: string;
}
