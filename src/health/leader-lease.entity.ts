import { Column, Entity, PrimaryColumn } from 'typeorm';

/** A named lease in Postgres; whoever holds it unexpired is the leader for that job (the monitor). */
@Entity({ name: 'leader_lease' })
export class LeaderLease {
  @PrimaryColumn({ type: 'varchar', length: 64 })
  name!: string;

  @Column({ type: 'varchar', length: 128 })
  holder!: string;

  @Column({ type: 'timestamptz' })
  expiresAt!: Date;
}
