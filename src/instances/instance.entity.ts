import { Column, CreateDateColumn, Entity, OneToMany, PrimaryGeneratedColumn } from 'typeorm';
import { InstanceState } from './instance-state';
import { Port } from './port.entity';

@Entity({ name: 'instance' })
export class Instance {
  @PrimaryGeneratedColumn()
  id!: number;

  @Column({ type: 'varchar', length: 16 })
  state!: InstanceState;

  /** Why the instance entered its current state; every change is copied to state_change by a trigger. */
  @Column({ type: 'text' })
  stateReason!: string;

  @Column({ type: 'timestamptz' })
  stateChangedAt!: Date;

  /** Name of the Docker host (from configuration) that runs the container. */
  @Column({ type: 'varchar', length: 64 })
  host!: string;

  @Column({ type: 'varchar', length: 128 })
  containerName!: string;

  @Column({ type: 'varchar', length: 64, nullable: true })
  dockerId!: string | null;

  /** Host port of each named container port, e.g. { ipc: 40000, vnc: 40001 }. Mirrors the port table. */
  @Column({ type: 'jsonb', default: {} })
  ports!: Record<string, number>;

  /** A hot spare stays unpaused while idle. */
  @Column({ type: 'boolean', default: false })
  hot!: boolean;

  @Column({ type: 'text', nullable: true })
  loadedFile!: string | null;

  @Column({ type: 'int', default: 0 })
  restartCount!: number;

  @Column({ type: 'timestamptz', nullable: true })
  nextRestartAt!: Date | null;

  @Column({ type: 'int', default: 0 })
  allocationCount!: number;

  @Column({ type: 'timestamptz', nullable: true })
  readyAt!: Date | null;

  @CreateDateColumn({ type: 'timestamptz' })
  createdAt!: Date;

  @Column({ type: 'timestamptz', nullable: true })
  deletedAt!: Date | null;

  @OneToMany(() => Port, (port) => port.instance)
  portRows?: Port[];
}
