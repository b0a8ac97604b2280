import { Module } from '@nestjs/common';
import { CacheDirectory } from './cache-directory';
import { CachedFileStore } from './cached-file.store';
import { FileDownloader } from './file-downloader';
import { FilesService } from './files.service';

/** The file cache; its controller (FilesController) is mounted by the API role. */
@Module({
  providers: [FilesService, CachedFileStore, CacheDirectory, FileDownloader],
  exports: [FilesService],
})
export class FilesModule {}
