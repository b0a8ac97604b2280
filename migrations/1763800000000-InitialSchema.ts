import { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * The whole state store: instances, the ports they hold, allocations, cached files, the history of
 * every state change, and the leader lease of the monitor. Constraints here protect the invariants:
 * at most one open allocation per instance, and no change of an instance's state while an open
 * allocation holds it (composite foreign key with ON UPDATE CASCADE into a check constraint).
 */
export class InitialSchema1763800000000 implements MigrationInterface {
  name = 'InitialSchema1763800000000';

  public async up(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query(`
      CREATE TABLE "instance" (
        "id" SERIAL PRIMARY KEY,
        "state" varchar(16) NOT NULL DEFAULT 'creating',
        "state_reason" text NOT NULL DEFAULT 'created',
        "state_changed_at" timestamptz NOT NULL DEFAULT clock_timestamp(),
        "host" varchar(64) NOT NULL,
        "container_name" varchar(128) NOT NULL,
        "docker_id" varchar(64),
        "ports" jsonb NOT NULL DEFAULT '{}'::jsonb,
        "hot" boolean NOT NULL DEFAULT false,
        "loaded_file" text,
        "restart_count" integer NOT NULL DEFAULT 0,
        "next_restart_at" timestamptz,
        "allocation_count" integer NOT NULL DEFAULT 0,
        "ready_at" timestamptz,
        "created_at" timestamptz NOT NULL DEFAULT now(),
        "deleted_at" timestamptz,
        CONSTRAINT "instance_state_check" CHECK ("state" IN
          ('creating', 'starting', 'idle', 'allocated', 'releasing', 'error', 'deleting', 'deleted')),
        CONSTRAINT "instance_deleted_at_check" CHECK (("state" = 'deleted') = ("deleted_at" IS NOT NULL)),
        CONSTRAINT "instance_restart_count_check" CHECK ("restart_count" >= 0),
        CONSTRAINT "instance_allocation_count_check" CHECK ("allocation_count" >= 0),
        CONSTRAINT "instance_id_state_key" UNIQUE ("id", "state")
      )`);
    await queryRunner.query(`CREATE INDEX "instance_state_idx" ON "instance" ("state", "id") WHERE "state" <> 'deleted'`);
    await queryRunner.query(
      `CREATE UNIQUE INDEX "instance_live_container_name_key" ON "instance" ("host", "container_name") WHERE "state" <> 'deleted'`,
    );
    await queryRunner.query(
      `CREATE UNIQUE INDEX "instance_live_docker_id_key" ON "instance" ("host", "docker_id") WHERE "docker_id" IS NOT NULL AND "state" <> 'deleted'`,
    );

    await queryRunner.query(`
      CREATE TABLE "port" (
        "host" varchar(64) NOT NULL,
        "number" integer NOT NULL,
        "instance_id" integer REFERENCES "instance" ("id") ON DELETE SET NULL,
        "purpose" varchar(32),
        "assigned_at" timestamptz,
        PRIMARY KEY ("host", "number"),
        CONSTRAINT "port_number_check" CHECK ("number" BETWEEN 1 AND 65535),
        CONSTRAINT "port_holder_check" CHECK (("instance_id" IS NULL) = ("purpose" IS NULL)
          AND ("instance_id" IS NULL) = ("assigned_at" IS NULL))
      )`);
    await queryRunner.query(
      `CREATE UNIQUE INDEX "port_instance_purpose_key" ON "port" ("instance_id", "purpose") WHERE "instance_id" IS NOT NULL`,
    );
    await queryRunner.query(`CREATE INDEX "port_free_idx" ON "port" ("host", "number") WHERE "instance_id" IS NULL`);

    await queryRunner.query(`
      CREATE TABLE "allocation" (
        "id" SERIAL PRIMARY KEY,
        "state" varchar(16) NOT NULL DEFAULT 'pending',
        "state_reason" text NOT NULL DEFAULT 'requested',
        "failure" varchar(16),
        "instance_id" integer REFERENCES "instance" ("id"),
        "holds_instance_state" varchar(16),
        "file_url" text,
        "loaded_file" text,
        "lease_seconds" integer NOT NULL,
        "expires_at" timestamptz,
        "idempotency_key" varchar(255),
        "labels" jsonb NOT NULL DEFAULT '{}'::jsonb,
        "created_at" timestamptz NOT NULL DEFAULT now(),
        "activated_at" timestamptz,
        "deleted_at" timestamptz,
        CONSTRAINT "allocation_state_check" CHECK ("state" IN ('pending', 'active', 'ended', 'failed', 'expired')),
        CONSTRAINT "allocation_lease_check" CHECK ("lease_seconds" > 0),
        CONSTRAINT "allocation_failure_check" CHECK (("state" = 'failed') = ("failure" IS NOT NULL)
          AND ("failure" IS NULL OR "failure" IN ('capacity', 'engine', 'timeout', 'queue', 'cancelled', 'file'))),
        CONSTRAINT "allocation_active_instance_check" CHECK ("state" <> 'active' OR "instance_id" IS NOT NULL),
        CONSTRAINT "allocation_closed_at_check" CHECK (("state" IN ('pending', 'active')) = ("deleted_at" IS NULL)),
        CONSTRAINT "allocation_holds_check" CHECK (
          ("holds_instance_state" IS NULL OR "holds_instance_state" = 'allocated')
          AND (("holds_instance_state" IS NOT NULL) = ("state" IN ('pending', 'active') AND "instance_id" IS NOT NULL))),
        CONSTRAINT "allocation_held_instance_fk" FOREIGN KEY ("instance_id", "holds_instance_state")
          REFERENCES "instance" ("id", "state") ON UPDATE CASCADE
      )`);
    await queryRunner.query(
      `CREATE UNIQUE INDEX "allocation_one_holder_per_instance" ON "allocation" ("instance_id") WHERE "holds_instance_state" IS NOT NULL`,
    );
    await queryRunner.query(
      `CREATE UNIQUE INDEX "allocation_idempotency_key" ON "allocation" ("idempotency_key") WHERE "idempotency_key" IS NOT NULL`,
    );
    await queryRunner.query(`CREATE INDEX "allocation_open_idx" ON "allocation" ("state", "id") WHERE "deleted_at" IS NULL`);
    await queryRunner.query(`CREATE INDEX "allocation_instance_idx" ON "allocation" ("instance_id")`);

    await queryRunner.query(`
      CREATE TABLE "cached_file" (
        "id" SERIAL PRIMARY KEY,
        "url" text NOT NULL,
        "local_name" varchar(255) NOT NULL,
        "filename" text NOT NULL,
        "size" bigint NOT NULL,
        "sha256" char(64) NOT NULL,
        "content_type" varchar(255),
        "fetched_at" timestamptz NOT NULL DEFAULT now(),
        CONSTRAINT "cached_file_url_key" UNIQUE ("url"),
        CONSTRAINT "cached_file_local_name_key" UNIQUE ("local_name"),
        CONSTRAINT "cached_file_size_check" CHECK ("size" >= 0),
        CONSTRAINT "cached_file_local_name_check" CHECK ("local_name" ~ '^[A-Za-z0-9][A-Za-z0-9._-]*$')
      )`);

    await queryRunner.query(`
      CREATE TABLE "state_change" (
        "id" BIGSERIAL PRIMARY KEY,
        "instance_id" integer REFERENCES "instance" ("id") ON DELETE CASCADE,
        "allocation_id" integer REFERENCES "allocation" ("id") ON DELETE CASCADE,
        "from_state" varchar(16),
        "to_state" varchar(16) NOT NULL,
        "reason" text NOT NULL,
        "at" timestamptz NOT NULL DEFAULT clock_timestamp(),
        CONSTRAINT "state_change_subject_check" CHECK (num_nonnulls("instance_id", "allocation_id") = 1)
      )`);
    await queryRunner.query(`CREATE INDEX "state_change_instance_idx" ON "state_change" ("instance_id", "id") WHERE "instance_id" IS NOT NULL`);
    await queryRunner.query(
      `CREATE INDEX "state_change_allocation_idx" ON "state_change" ("allocation_id", "id") WHERE "allocation_id" IS NOT NULL`,
    );

    await queryRunner.query(`
      CREATE TABLE "host_status" (
        "name" varchar(64) PRIMARY KEY,
        "reachable" boolean NOT NULL,
        "memory_total_bytes" bigint NOT NULL DEFAULT 0,
        "memory_used_percent" real NOT NULL DEFAULT 0,
        "cpu_count" integer NOT NULL DEFAULT 0,
        "cpu_used_percent" real NOT NULL DEFAULT 0,
        "error" text,
        "sampled_at" timestamptz NOT NULL DEFAULT now()
      )`);

    await queryRunner.query(`
      CREATE TABLE "leader_lease" (
        "name" varchar(64) PRIMARY KEY,
        "holder" varchar(128) NOT NULL,
        "expires_at" timestamptz NOT NULL
      )`);

    // History is written by the database itself, so no code path can change a state without a record.
    await queryRunner.query(`
      CREATE FUNCTION "touch_state_changed_at"() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN
        IF NEW."state" IS DISTINCT FROM OLD."state" THEN
          NEW."state_changed_at" := clock_timestamp();
        END IF;
        RETURN NEW;
      END $$`);
    await queryRunner.query(`
      CREATE TRIGGER "instance_touch_state_changed_at" BEFORE UPDATE OF "state" ON "instance"
      FOR EACH ROW EXECUTE FUNCTION "touch_state_changed_at"()`);
    await queryRunner.query(`
      CREATE FUNCTION "record_state_change"() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN
        IF TG_OP = 'INSERT' OR NEW."state" IS DISTINCT FROM OLD."state"
           OR NEW."state_reason" IS DISTINCT FROM OLD."state_reason" THEN
          IF TG_TABLE_NAME = 'instance' THEN
            INSERT INTO "state_change" ("instance_id", "from_state", "to_state", "reason")
            VALUES (NEW."id", CASE WHEN TG_OP = 'INSERT' THEN NULL ELSE OLD."state" END, NEW."state", NEW."state_reason");
          ELSE
            INSERT INTO "state_change" ("allocation_id", "from_state", "to_state", "reason")
            VALUES (NEW."id", CASE WHEN TG_OP = 'INSERT' THEN NULL ELSE OLD."state" END, NEW."state", NEW."state_reason");
          END IF;
        END IF;
        RETURN NULL;
      END $$`);
    await queryRunner.query(`
      CREATE TRIGGER "instance_state_history" AFTER INSERT OR UPDATE OF "state", "state_reason" ON "instance"
      FOR EACH ROW EXECUTE FUNCTION "record_state_change"()`);
    await queryRunner.query(`
      CREATE TRIGGER "allocation_state_history" AFTER INSERT OR UPDATE OF "state", "state_reason" ON "allocation"
      FOR EACH ROW EXECUTE FUNCTION "record_state_change"()`);
  }

  public async down(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query(`DROP TRIGGER "allocation_state_history" ON "allocation"`);
    await queryRunner.query(`DROP TRIGGER "instance_state_history" ON "instance"`);
    await queryRunner.query(`DROP TRIGGER "instance_touch_state_changed_at" ON "instance"`);
    await queryRunner.query(`DROP FUNCTION "record_state_change"()`);
    await queryRunner.query(`DROP FUNCTION "touch_state_changed_at"()`);
    await queryRunner.query(`DROP TABLE "leader_lease"`);
    await queryRunner.query(`DROP TABLE "host_status"`);
    await queryRunner.query(`DROP TABLE "state_change"`);
    await queryRunner.query(`DROP TABLE "cached_file"`);
    await queryRunner.query(`DROP TABLE "allocation"`);
    await queryRunner.query(`DROP TABLE "port"`);
    await queryRunner.query(`DROP TABLE "instance"`);
  }
}
