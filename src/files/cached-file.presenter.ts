import { ApiProperty } from '@nestjs/swagger';
import { CachedFile } from './cached-file.entity';

export class CachedFileView {
  @ApiProperty({ description: 'The URL the file was fetched from (the cache key).', example: 'http://files.example.org/labs/lab1.pkt' })
  url!: string;

  @ApiProperty({ description: 'Path of the file inside the containers; give it as `file` of an allocation.', example: '/files/3f2a9c0d1e4b5a67-lab1.pkt' })
  filename!: string;

  @ApiProperty({ description: 'Size in bytes.' })
  size!: number;

  @ApiProperty({ description: 'SHA-256 of the content, hex.' })
  sha256!: string;

  @ApiProperty({ description: 'Content-Type the server gave, if any.', nullable: true, type: String })
  contentType!: string | null;

  @ApiProperty({ description: 'When it was fetched.' })
  fetchedAt!: Date;
}

export function presentFile(file: CachedFile): CachedFileView {
  return {
    url: file.url,
    filename: file.filename,
    size: file.size,
    sha256: file.sha256,
    contentType: file.contentType,
    fetchedAt: file.fetchedAt,
  };
}
