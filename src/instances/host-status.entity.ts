import { Column, Entity, PrimaryColumn } from 'typeorm';

/** The last usage measured on each Docker host by a worker; the API checks creation limits against it. */
@Entity({ name: 'host_status' })
export class HostStatus {
  @PrimaryColumn({ type: 'varchar', length: 64 })
  name!: string;

  @Column({ type: 'boolean' })
  reachable!: boolean;

  @Column({ type: 'bigint', transformer: { to: (v: number) => v, from: (v: string) => Number(v) } })
  memoryTotalBytes!: number;

  @Column({ type: 'real' })
  memoryUsedPercent!: number;

  @Column({ type: 'int' })
  cpuCount!: number;

  @Column({ type: 'real' })
  cpuUsedPercent!: number;

  @Column({ type: 'text', nullable: true })
  error!: string | null;

  @Column({ type: 'timestamptz' })
  sampledAt!: Date;
}
