import { Body, Controller, Delete, Get, HttpCode, Param, Post, Query, Res } from '@nestjs/common';
import { ApiBody, ApiConsumes, ApiExtraModels, ApiOkResponse, ApiOperation, ApiParam, ApiResponse, ApiTags, getSchemaPath } from '@nestjs/swagger';
import { Response } from 'express';
import { CachedFileView, presentFile } from './cached-file.presenter';
import { AddFileDto } from './dto/add-file.dto';
import { FileQuery } from './dto/file.query';
import { FilesService } from './files.service';

const KEY_PARAM = {
  name: 'url',
  description: "The file's URL, URL-encoded (e.g. http%3A%2F%2Fhost%2Flab1.pkt), or its path inside the containers or name in the cache.",
};

@ApiTags('files')
@ApiExtraModels(AddFileDto)
@Controller('files')
export class FilesController {
  constructor(private readonly files: FilesService) {}

  @Post()
  @ApiOperation({
    summary: 'Fetches a URL once into the cache mounted read-only into every instance; answers {url, filename}, filename being the path inside the containers.',
    description:
      'Only http and https; when FILES_ALLOWED_HOSTS is set, only its hosts (host or host:port), on every redirect too (at most 5); ' +
      'an empty FILES_ALLOWED_HOSTS allows any host. Size (FILES_MAX_BYTES) and time (FILES_TIMEOUT_MS) are limited. ' +
      'Concurrent requests for the same URL share one download.',
  })
  @ApiConsumes('text/plain', 'application/json')
  @ApiBody({
    description: 'The URL as text/plain (what the PT Anywhere client sends), or JSON {"url": ...}.',
    schema: { oneOf: [{ type: 'string', example: 'http://files.example.org/labs/lab1.pkt' }, { $ref: getSchemaPath(AddFileDto) }] },
  })
  @ApiResponse({ status: 201, type: CachedFileView, description: 'Fetched now.' })
  @ApiResponse({ status: 200, type: CachedFileView, description: 'Already cached (or fetched by a concurrent request for the same URL).' })
  @ApiResponse({ status: 400, description: 'Malformed body, URL not allowed, or the URL could not be fetched (the message says why); nothing is cached.' })
  async add(@Body() body: unknown, @Res({ passthrough: true }) response: Response): Promise<CachedFileView> {
    const { file, created } = await this.files.add(body);
    response.status(created ? 201 : 200);
    return presentFile(file);
  }

  @Get()
  @ApiOperation({ summary: 'The cached files (or, with ?url=, one of them).' })
  @ApiOkResponse({ type: CachedFileView, isArray: true })
  async list(@Query() query: FileQuery): Promise<CachedFileView[] | CachedFileView> {
    if (query.url !== undefined) return presentFile(await this.files.get(query.url));
    return (await this.files.list()).map(presentFile);
  }

  @Get(':url')
  @ApiOperation({ summary: 'One cached file (404 when not cached).' })
  @ApiParam(KEY_PARAM)
  @ApiOkResponse({ type: CachedFileView })
  @ApiResponse({ status: 404, description: 'Not cached.' })
  async get(@Param('url') key: string): Promise<CachedFileView> {
    return presentFile(await this.files.get(key));
  }

  @Delete()
  @HttpCode(200)
  @ApiOperation({ summary: 'Removes every cached file (or, with ?url=, one of them); answers the removed files.' })
  @ApiOkResponse({ type: CachedFileView, isArray: true })
  async clear(@Query() query: FileQuery): Promise<CachedFileView[] | CachedFileView> {
    if (query.url !== undefined) return presentFile(await this.files.remove(query.url));
    return (await this.files.clear()).map(presentFile);
  }

  @Delete(':url')
  @HttpCode(200)
  @ApiOperation({ summary: 'Removes a cached file (404 when not cached). Allocations that loaded it are not affected.' })
  @ApiParam(KEY_PARAM)
  @ApiOkResponse({ type: CachedFileView })
  @ApiResponse({ status: 404, description: 'Not cached.' })
  async remove(@Param('url') key: string): Promise<CachedFileView> {
    return presentFile(await this.files.remove(key));
  }
}
