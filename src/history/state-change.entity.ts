import { Column, Entity, PrimaryGeneratedColumn } from 'typeorm';

/** Written only by database triggers on instance and allocation: every state change with its time and reason. */
@Entity({ name: 'state_change' })
export class StateChange {
  @PrimaryGeneratedColumn({ type: 'bigint' })
  id!: string;

  @Column({ type: 'int', nullable: true })
  instanceId!: number | null;

  @Column({ type: 'int', nullable: true })
  allocationId!: number | null;

  @Column({ type: 'varchar', length: 16, nullable: true })
  fromState!: string | null;

  @Column({ type: 'varchar', length: 16 })
  toState!: string;

  @Column({ type: 'text' })
  reason!: string;

  @Column({ type: 'timestamptz' })
  at!: Date;
}
