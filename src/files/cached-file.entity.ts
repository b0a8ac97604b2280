import { Column, Entity, PrimaryGeneratedColumn } from 'typeorm';

@Entity({ name: 'cached_file' })
export class CachedFile {
  @PrimaryGeneratedColumn()
  id!: number;

  @Column({ type: 'text', unique: true })
  url!: string;

  /** Name of the file in the cache directory. */
  @Column({ type: 'varchar', length: 255, unique: true })
  localName!: string;

  /** Path of the file inside the containers. */
  @Column({ type: 'text' })
  filename!: string;

  @Column({ type: 'bigint', transformer: { to: (v: number) => v, from: (v: string) => Number(v) } })
  size!: number;

  @Column({ type: 'char', length: 64 })
  sha256!: string;

  @Column({ type: 'varchar', length: 255, nullable: true })
  contentType!: string | null;

  @Column({ type: 'timestamptz' })
  fetchedAt!: Date;
}
