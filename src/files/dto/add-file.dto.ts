import { ApiProperty } from '@nestjs/swagger';

/** The JSON form of POST /files (the text/plain form is the URL alone). */
export class AddFileDto {
  @ApiProperty({ description: 'http(s) URL of the file to cache.', example: 'http://files.example.org/labs/lab1.pkt', maxLength: 2048 })
  url!: string;
}
