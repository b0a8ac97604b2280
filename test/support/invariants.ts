import { TEST_NAMESPACE } from './env';
import request from 'supertest';
import { INSTANCE_LABEL, OWNER_LABEL } from '../../src/container-driver/container-driver';
import { docker } from './harness';

interface InstanceRow {
  id: number;
  state: string;
  dockerId: string | null;
  hot: boolean;
}

interface AllocationRow {
  id: number;
  status: string;
  instanceId: number | null;
}

/**
 * The invariants of the design, checked by asking both the API and the engine. Returns the
 * violations found (empty when everything agrees).
 */
export async function violations(apiUrl: string, owner = TEST_NAMESPACE): Promise<string[]> {
  const found: string[] = [];
  const instances = (await request(apiUrl).get('/instances?show=running&limit=1000').expect(200)).body as InstanceRow[];
  const current = (await request(apiUrl).get('/allocations?show=current&limit=1000').expect(200)).body as AllocationRow[];
  const containers = await docker.listContainers({ all: true, filters: { label: [`${OWNER_LABEL}=${owner}`] } });
  const byDockerId = new Map(containers.map((container) => [container.Id, container]));
  const byInstance = new Map(instances.map((instance) => [instance.id, instance]));

  // 1. No instance in two open allocations; an active allocation's instance is allocated.
  const holders = new Map<number, number>();
  for (const allocation of current) {
    if (allocation.instanceId === null) continue;
    if (holders.has(allocation.instanceId)) {
      found.push(`instance ${allocation.instanceId} held by allocations ${holders.get(allocation.instanceId)} and ${allocation.id}`);
    }
    holders.set(allocation.instanceId, allocation.id);
    const instance = byInstance.get(allocation.instanceId);
    if (allocation.status === 'active' && instance?.state !== 'allocated') {
      found.push(`active allocation ${allocation.id} on instance ${allocation.instanceId} in state ${instance?.state ?? 'missing'}`);
    }
    // 2. An active allocation's container is running and unpaused.
    const container = instance?.dockerId ? byDockerId.get(instance.dockerId) : undefined;
    if (allocation.status === 'active' && container?.State !== 'running') {
      found.push(`active allocation ${allocation.id}: container is ${container?.State ?? 'missing'}`);
    }
  }
  for (const instance of instances) {
    const container = instance.dockerId ? byDockerId.get(instance.dockerId) : undefined;
    // 2. An idle instance's container is paused (running when hot).
    if (instance.state === 'idle') {
      const expected = instance.hot ? 'running' : 'paused';
      if (container?.State !== expected) found.push(`idle instance ${instance.id}: container ${container?.State ?? 'missing'}, expected ${expected}`);
    }
    // 4. Every instance that should have a container has one; transitional states settle.
    if (['idle', 'allocated'].includes(instance.state) && !container) found.push(`instance ${instance.id} (${instance.state}) has no container`);
    if (['creating', 'starting', 'releasing', 'deleting', 'error'].includes(instance.state)) {
      found.push(`instance ${instance.id} still ${instance.state}`);
    }
    if (instance.state === 'allocated' && !holders.has(instance.id)) found.push(`instance ${instance.id} allocated without an allocation`);
  }
  // 4. Every container labelled as ours is known to the database.
  const known = new Set(instances.map((instance) => instance.dockerId));
  for (const container of containers) {
    if (!known.has(container.Id)) found.push(`container ${container.Id.slice(0, 12)} (instance label ${container.Labels[INSTANCE_LABEL]}) unknown to the database`);
  }
  for (const allocation of current) {
    if (allocation.status === 'pending') found.push(`allocation ${allocation.id} still pending`);
  }
  return found;
}
