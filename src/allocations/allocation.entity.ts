import { Column, CreateDateColumn, Entity, JoinColumn, ManyToOne, PrimaryGeneratedColumn } from 'typeorm';
import { Instance } from '../instances/instance.entity';
import { AllocationFailure, AllocationState } from './allocation-state';

@Entity({ name: 'allocation' })
export class Allocation {
  @PrimaryGeneratedColumn()
  id!: number;

  @Column({ type: 'varchar', length: 16 })
  state!: AllocationState;

  @Column({ type: 'text' })
  stateReason!: string;

  /** Why a failed allocation failed: decides the HTTP status (capacity, timeout, queue: 503; engine: 500). */
  @Column({ type: 'varchar', length: 16, nullable: true })
  failure!: AllocationFailure | null;

  @Column({ type: 'int', nullable: true })
  instanceId!: number | null;

  @ManyToOne(() => Instance)
  @JoinColumn({ name: 'instance_id' })
  instance?: Instance | null;

  /**
   * 'allocated' while this allocation holds its instance, null otherwise. A foreign key on
   * (instance_id, holds_instance_state) -> instance(id, state) makes the database refuse any
   * change of the instance's state while an open allocation holds it.
   */
  @Column({ type: 'varchar', length: 16, nullable: true })
  holdsInstanceState!: 'allocated' | null;

  /** The initial file requested (URL or cached path), null for the profile's default. */
  @Column({ type: 'text', nullable: true })
  fileUrl!: string | null;

  /** The path inside the container of the file loaded for this allocation. */
  @Column({ type: 'text', nullable: true })
  loadedFile!: string | null;

  @Column({ type: 'int' })
  leaseSeconds!: number;

  @Column({ type: 'timestamptz', nullable: true })
  expiresAt!: Date | null;

  @Column({ type: 'varchar', length: 255, nullable: true })
  idempotencyKey!: string | null;

  @Column({ type: 'jsonb', default: {} })
  labels!: Record<string, string>;

  @CreateDateColumn({ type: 'timestamptz' })
  createdAt!: Date;

  @Column({ type: 'timestamptz', nullable: true })
  activatedAt!: Date | null;

  /** When it ended, failed or expired; null while pending or active. */
  @Column({ type: 'timestamptz', nullable: true })
  deletedAt!: Date | null;
}
