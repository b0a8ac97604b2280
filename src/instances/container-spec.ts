import { AppConfig } from '../config/app-config';
import { ContainerSpec, INSTANCE_LABEL, OWNER_LABEL } from '../container-driver/container-driver';

/** The container of one instance, from the workload profile: hardened, labelled as ours, with its ports. */
export function containerSpec(config: AppConfig, instance: { id: number; containerName: string; ports: Record<string, number> }): ContainerSpec {
  const workload = config.workload;
  const hostNetwork = config.docker.networkMode === 'host';
  const env = [...workload.env];
  for (const [name, containerPort] of Object.entries(workload.ports)) {
    const variable = workload.portEnv[name];
    if (variable === undefined) continue;
    // With host networking the app must listen on the host port given to it; otherwise on its usual port.
    env.push(`${variable}=${hostNetwork ? instance.ports[name] : containerPort}`);
  }
  const publish: Record<number, number> = {};
  if (!hostNetwork) {
    for (const [name, containerPort] of Object.entries(workload.ports)) {
      const hostPort = instance.ports[name];
      if (hostPort !== undefined) publish[containerPort] = hostPort;
    }
  }
  const mounts = [`${config.files.cacheDir}:${config.files.mountPath}`];
  if (workload.dataVolume !== undefined) mounts.push(workload.dataVolume);
  return {
    name: instance.containerName,
    image: workload.image,
    env,
    command: workload.command,
    labels: { [OWNER_LABEL]: config.instanceNamePrefix, [INSTANCE_LABEL]: String(instance.id) },
    networkMode: config.docker.networkMode,
    publish,
    memoryBytes: workload.memoryMb * 1024 * 1024,
    nanoCpus: Math.round(workload.cpus * 1e9),
    pidsLimit: workload.pidsLimit,
    readOnlyRootfs: workload.readOnlyRootfs,
    tmpfs: workload.tmpfs,
    readOnlyMounts: mounts,
  };
}
