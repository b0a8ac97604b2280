import { Column, Entity, JoinColumn, ManyToOne, PrimaryColumn } from 'typeorm';
import { Instance } from './instance.entity';

/** One row per host port of the configured range; a port is free while instanceId is null. */
@Entity({ name: 'port' })
export class Port {
  @PrimaryColumn({ type: 'varchar', length: 64 })
  host!: string;

  @PrimaryColumn({ type: 'int' })
  number!: number;

  @Column({ type: 'int', nullable: true })
  instanceId!: number | null;

  @ManyToOne(() => Instance, (instance) => instance.portRows, { onDelete: 'SET NULL' })
  @JoinColumn({ name: 'instance_id' })
  instance?: Instance | null;

  /** Which container port it maps (ipc, vnc, ...). */
  @Column({ type: 'varchar', length: 32, nullable: true })
  purpose!: string | null;

  @Column({ type: 'timestamptz', nullable: true })
  assignedAt!: Date | null;
}
