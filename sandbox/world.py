"""The runbook's platform as a healthy baseline: an RKE2 cluster on Harvester (3 control-plane
nodes, general/compute/database worker pools), Cilium with L2 announcements, Traefik on
203.0.113.202, cert-manager with the Vault ClusterIssuer, Vault HA, CNPG, and the services of
runbook ch. 7. ``build_platform(size)`` scales it; the explicit knobs (nodes, pods,
certificates, pvcs) size the benchmark world.

Names follow the runbook (rke2-traefik, rke2-coredns-rke2-coredns, vault-issuer, pki_int,
<svc>-example-com-tls, ...). Objects are plain Kubernetes JSON, shaped as the API returns them.
"""

from __future__ import annotations

import base64
import gc
import json
import random
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sandbox import etcd_metrics
from sandbox.kube.store import Obj, ObjectStore
from sandbox.platform import (APPS, ARGO, CAPI, CERT_MANAGER, CILIUM_ALPHA, CNPG, CORE, DOMAIN,
                              GATEWAY, HELM, LB_IP, POLICY, STORAGE, TRAEFIK, Platform, add_resource_metrics, iso,
                              now)
from sandbox.vault.state import VaultCluster
from sandbox.world_mgmt import build_mgmt, link

KUBELET_VERSION = "v1.34.2+rke2r1"
OLD_KUBELET_VERSION = "v1.33.4+rke2r1"
CLUSTER_NAME = "rke2"
CP_NODES = ("rke2-cp-1", "rke2-cp-2", "rke2-cp-3")
POOLS = ("general", "compute", "database")
NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease", "cattle-system",
              "fleet-default", "cert-manager", "vault", "database", "cnpg-system", "harbor", "minio",
              "keycloak", "mattermost", "monitoring", "kasm", "argocd", "argo-rollouts",
              "uptime-kuma", "node-labeler", "storage-autoscaler", "terraform-state")
FILLER_NAMESPACE = "workloads"
CNPG_CLUSTERS = {"harbor-pg": "registry", "keycloak-pg": "keycloak", "mattermost-pg": "mattermost",
                 "kasm-pg": "kasm"}
_SUFFIX = "bcdfghjklmnpqrstvwxz2456789"  # the alphabet of Kubernetes' generated name suffixes
CP_TAINTS = [{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"},
             {"key": "node-role.kubernetes.io/etcd", "effect": "NoExecute"}]


def worker_name(pool: str, i: int) -> str:
    return f"rke2-{pool}-{i}"


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@dataclass
class _Builder:
    store: ObjectStore
    vault: VaultCluster
    rng: random.Random
    t0: datetime = field(default_factory=now)
    nodes: dict[str, list[str]] = field(default_factory=dict)  # pool ("cp" too) → names
    node_ips: dict[str, str] = field(default_factory=dict)
    node_index: dict[str, int] = field(default_factory=dict)
    pod_ips: dict[str, int] = field(default_factory=dict)
    rr: dict[str, int] = field(default_factory=dict)  # round-robin cursor per pool
    domain: str = DOMAIN
    _ago: dict[tuple[float, float, float], str] = field(default_factory=dict)

    # -- small helpers -------------------------------------------------------------------------
    def uid(self) -> str:
        h = "%032x" % self.rng.getrandbits(128)
        return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) % 4]}{h[17:20]}-{h[20:]}"

    def hex64(self) -> str:
        return "%064x" % self.rng.getrandbits(256)

    def suffix(self, n: int) -> str:
        return "".join(self.rng.choice(_SUFFIX) for _ in range(n))

    def ago(self, days: float = 0, hours: float = 0, minutes: float = 0) -> str:
        key = (days, hours, minutes)
        stamp = self._ago.get(key)
        if stamp is None:  # a small memo: 30k pods share a few thousand start times
            stamp = self._ago[key] = iso(self.t0 - timedelta(days=days, hours=hours, minutes=minutes))
        return stamp

    @property
    def created(self) -> str:
        return self.ago(days=21)

    def meta(self, name: str, namespace: str = "", labels: dict[str, str] | None = None,
             **extra: Any) -> dict[str, Any]:
        m: dict[str, Any] = {"name": name, "uid": self.uid(), "creationTimestamp": self.created,
                             "labels": dict(labels or {})}
        if namespace:
            m["namespace"] = namespace
        m.update(extra)
        return m

    def add(self, obj: Obj) -> Obj:
        return self.store.add(obj)

    def pick_node(self, pool: str) -> str:
        names = self.nodes.get(pool) or self.nodes["general"]
        i = self.rr.get(pool, 0)
        self.rr[pool] = i + 1
        return names[i % len(names)]

    def pod_ip(self, node: str) -> str:
        n = self.pod_ips.get(node, 10) + 1
        self.pod_ips[node] = n
        i = self.node_index[node]
        return f"10.{42 + i // 256}.{i % 256}.{n % 250 + 2}"

    # -- nodes ---------------------------------------------------------------------------------
    def node(self, name: str, pool: str, i: int) -> None:
        self.node_index[name] = i
        ip = f"10.0.{1 + i // 250}.{10 + i % 250}"
        self.node_ips[name] = ip
        self.nodes.setdefault(pool, []).append(name)
        cp = pool == "cp"
        labels = {"beta.kubernetes.io/arch": "amd64", "beta.kubernetes.io/os": "linux",
                  "kubernetes.io/arch": "amd64", "kubernetes.io/hostname": name,
                  "kubernetes.io/os": "linux", "node.kubernetes.io/instance-type": "rke2",
                  "cattle.io/os": "linux", "rke.cattle.io/machine": self.uid(),
                  "rke.cattle.io/rke-machine-pool-name": "control-plane" if cp else pool}
        if cp:
            labels.update({"node-role.kubernetes.io/control-plane": "true",
                           "node-role.kubernetes.io/etcd": "true",
                           "node-role.kubernetes.io/master": "true"})
        else:
            labels["workload-type"] = pool
            labels["node-role.kubernetes.io/worker"] = "true"
        cpu, mem_gi = ("4", 16) if cp else ("8", 32)
        cond_time = self.ago(days=21)
        beat = iso(self.t0 - timedelta(seconds=self.rng.randint(5, 40)))

        def cond(t: str, status: str, reason: str, message: str) -> dict[str, str]:
            return {"type": t, "status": status, "lastHeartbeatTime": beat,
                    "lastTransitionTime": cond_time, "reason": reason, "message": message}
        self.add({
            "apiVersion": CORE, "kind": "Node",
            "metadata": self.meta(name, labels=labels, annotations={
                "rke2.io/hostname": name, "rke2.io/internal-ip": ip,
                "rke2.io/node-args": "[\"agent\"]" if not cp else "[\"server\"]",
                "cluster.x-k8s.io/machine": f"{name}-machine",
                "cluster.x-k8s.io/cluster-name": CLUSTER_NAME,
                "node.alpha.kubernetes.io/ttl": "0",
                "volumes.kubernetes.io/controller-managed-attach-detach": "true"}),
            "spec": {"podCIDR": f"10.{42 + i // 256}.{i % 256}.0/24",
                     "podCIDRs": [f"10.{42 + i // 256}.{i % 256}.0/24"],
                     "providerID": f"harvester://{self.uid()}",
                     **({"taints": [dict(t) for t in CP_TAINTS]} if cp else {})},
            "status": {
                "capacity": {"cpu": cpu, "ephemeral-storage": "103077868Ki", "hugepages-1Gi": "0",
                             "hugepages-2Mi": "0", "memory": f"{mem_gi * 1024 * 1024 - 2048}Ki",
                             "pods": "110"},
                "allocatable": {"cpu": cpu, "ephemeral-storage": "100275095866",
                                "hugepages-1Gi": "0", "hugepages-2Mi": "0",
                                "memory": f"{mem_gi * 1024 * 1024 - 2048}Ki", "pods": "110"},
                "conditions": [
                    cond("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
                    cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
                    cond("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
                    cond("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
                ],
                "addresses": [{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": name}],
                "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
                "nodeInfo": {"architecture": "amd64", "bootID": self.uid(),
                             "containerRuntimeVersion": "containerd://2.1.4-k3s1",
                             "kernelVersion": "5.14.0-503.14.1.el9_5.x86_64",
                             "kubeProxyVersion": KUBELET_VERSION, "kubeletVersion": KUBELET_VERSION,
                             "machineID": self.uid().replace("-", ""), "operatingSystem": "linux",
                             "osImage": "Rocky Linux 9.5 (Blue Onyx)", "systemUUID": self.uid()},
            },
        })
        # Rancher keeps the authoritative Machine on the management cluster (sandbox/world_mgmt.py,
        # where Rancher runs); this guest copy stays only for code that still reads it here.
        pool_name = "control-plane" if cp else pool
        self.add({
            "apiVersion": CAPI, "kind": "Machine",
            "metadata": self.meta(f"{name}-machine", "fleet-default", {
                "cluster.x-k8s.io/cluster-name": CLUSTER_NAME,
                "rke.cattle.io/rke-machine-pool-name": pool_name,
                **({"cluster.x-k8s.io/control-plane": "true"} if cp else {})}),
            "spec": {"clusterName": CLUSTER_NAME, "providerID": f"harvester://{name}",
                     "bootstrap": {"configRef": {"apiVersion": "rke.cattle.io/v1", "kind": "RKEBootstrap",
                                                 "name": f"{name}-bootstrap", "namespace": "fleet-default"}},
                     "infrastructureRef": {"apiVersion": "rke-machine.cattle.io/v1", "kind": "HarvesterMachine",
                                           "name": name, "namespace": "fleet-default"}},
            "status": {"phase": "Running", "bootstrapReady": True, "infrastructureReady": True,
                       "nodeRef": {"apiVersion": "v1", "kind": "Node", "name": name},
                       "addresses": [{"type": "InternalIP", "address": ip}],
                       "nodeInfo": {"kubeletVersion": KUBELET_VERSION},
                       "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": cond_time},
                                      {"type": "NodeHealthy", "status": "True", "lastTransitionTime": cond_time}]},
        })

    # -- pods and their controllers ------------------------------------------------------------
    def pod(self, ns: str, name: str, labels: dict[str, str], owner: tuple[str, str, str, str] | None,
            node: str, containers: list[tuple[str, str, list[int]]], *,
            node_selector: dict[str, str] | None = None, tolerate_all: bool = False,
            sa: str = "default", extra_meta: dict[str, Any] | None = None) -> Obj:
        """``owner`` = (apiVersion, kind, name, uid)."""
        start = self.ago(days=self.rng.randint(1, 20), minutes=self.rng.randint(0, 600))
        ip = self.pod_ip(node)
        meta = self.meta(name, ns, labels, generateName=name[: name.rfind("-") + 1] if owner else None,
                         creationTimestamp=start)
        if meta["generateName"] is None:
            del meta["generateName"]
        if owner:
            meta["ownerReferences"] = [{"apiVersion": owner[0], "kind": owner[1], "name": owner[2],
                                        "uid": owner[3], "controller": True, "blockOwnerDeletion": True}]
        if extra_meta:
            meta.update(extra_meta)
        spec: dict[str, Any] = {
            "containers": [{"name": c, "image": img, "imagePullPolicy": "IfNotPresent",
                            "ports": [{"containerPort": p, "protocol": "TCP"} for p in ports],
                            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
                            "terminationMessagePath": "/dev/termination-log",
                            "terminationMessagePolicy": "File"} for c, img, ports in containers],
            "nodeName": node, "restartPolicy": "Always", "schedulerName": "default-scheduler",
            "serviceAccountName": sa, "serviceAccount": sa, "dnsPolicy": "ClusterFirst",
            "enableServiceLinks": True, "priority": 0, "preemptionPolicy": "PreemptLowerPriority",
            "securityContext": {}, "terminationGracePeriodSeconds": 30,
            "tolerations": ([{"operator": "Exists"}] if tolerate_all else [
                {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
                {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}]),
        }
        if node_selector:
            spec["nodeSelector"] = dict(node_selector)

        def c(t: str) -> dict[str, Any]:
            return {"type": t, "status": "True", "lastProbeTime": None, "lastTransitionTime": start}
        return self.add({
            "apiVersion": CORE, "kind": "Pod", "metadata": meta, "spec": spec,
            "status": {
                "phase": "Running",
                "conditions": [c("PodReadyToStartContainers"), c("Initialized"), c("Ready"),
                               c("ContainersReady"), c("PodScheduled")],
                "hostIP": self.node_ips[node], "hostIPs": [{"ip": self.node_ips[node]}],
                "podIP": ip, "podIPs": [{"ip": ip}], "startTime": start, "qosClass": "Burstable",
                "containerStatuses": [{
                    "name": cn, "image": img, "imageID": f"{img.split(':')[0]}@sha256:{self.hex64()}",
                    "containerID": f"containerd://{self.hex64()}",
                    "ready": True, "started": True, "restartCount": 0,
                    "state": {"running": {"startedAt": start}}, "lastState": {},
                } for cn, img, _ in containers],
            },
        })

    def _workload(self, kind: str, ns: str, name: str, replicas: int, labels: dict[str, str],
                  containers: list[tuple[str, str, list[int]]], node_selector: dict[str, str] | None,
                  extra_spec: dict[str, Any] | None = None) -> tuple[Obj, str]:
        uid = self.uid()
        selector = {k: v for k, v in labels.items() if k.startswith(("app", "k8s-app", "name", "component", "cnpg"))} or dict(labels)
        tmpl_spec: dict[str, Any] = {"containers": [{"name": c, "image": img, "ports": [{"containerPort": p, "protocol": "TCP"} for p in ports]}
                                                    for c, img, ports in containers]}
        if node_selector:
            tmpl_spec["nodeSelector"] = dict(node_selector)
        spec: dict[str, Any] = {"selector": {"matchLabels": selector},
                                "template": {"metadata": {"labels": dict(labels)}, "spec": tmpl_spec}}
        if kind != "DaemonSet":
            spec["replicas"] = replicas
        spec.update(extra_spec or {})
        obj = {"apiVersion": APPS, "kind": kind,
               "metadata": {**self.meta(name, ns, labels), "uid": uid, "generation": 1,
                            "annotations": {"deployment.kubernetes.io/revision": "1"} if kind == "Deployment" else {}},
               "spec": spec, "status": {"observedGeneration": 1}}
        return obj, uid

    def deployment(self, ns: str, name: str, replicas: int, labels: dict[str, str], image: str,
                   ports: list[int] | None = None, pool: str = "general", *,
                   selector_pool: bool = True, container: str | None = None) -> Obj:
        containers = [(container or name, image, ports or [])]
        ns_sel = {"workload-type": pool} if selector_pool and pool in POOLS else None
        dep, dep_uid = self._workload("Deployment", ns, name, replicas, labels, containers, ns_sel,
                                      {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
                                       "revisionHistoryLimit": 10, "progressDeadlineSeconds": 600})
        hash_ = self.suffix(10)
        rs_name = f"{name}-{hash_}"
        pod_labels = {**labels, "pod-template-hash": hash_}
        rs, rs_uid = self._workload("ReplicaSet", ns, rs_name, replicas, pod_labels, containers, ns_sel)
        rs["metadata"]["ownerReferences"] = [{"apiVersion": APPS, "kind": "Deployment", "name": name,
                                              "uid": dep_uid, "controller": True, "blockOwnerDeletion": True}]
        rs["metadata"]["annotations"] = {"deployment.kubernetes.io/desired-replicas": str(replicas),
                                         "deployment.kubernetes.io/max-replicas": str(replicas + 1),
                                         "deployment.kubernetes.io/revision": "1"}
        rs["status"].update(replicas=replicas, fullyLabeledReplicas=replicas, readyReplicas=replicas,
                            availableReplicas=replicas)
        dep["status"].update(replicas=replicas, updatedReplicas=replicas, readyReplicas=replicas,
                             availableReplicas=replicas, conditions=[
            {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable",
             "message": "Deployment has minimum availability.", "lastUpdateTime": self.created,
             "lastTransitionTime": self.created},
            {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable",
             "message": f'ReplicaSet "{rs_name}" has successfully progressed.',
             "lastUpdateTime": self.created, "lastTransitionTime": self.created}])
        self.add(dep)
        self.add(rs)
        for _ in range(replicas):
            self.pod(ns, f"{rs_name}-{self.suffix(5)}", pod_labels, (APPS, "ReplicaSet", rs_name, rs_uid),
                     self.pick_node(pool), containers, node_selector=ns_sel)
        return dep

    def statefulset(self, ns: str, name: str, replicas: int, labels: dict[str, str], image: str,
                    ports: list[int] | None = None, pool: str = "general", *,
                    pvc: tuple[str, str] | None = None, nodes: list[str] | None = None,
                    selector_pool: bool = True, container: str | None = None,
                    extra_labels: dict[int, dict[str, str]] | None = None) -> Obj:
        """``pvc`` = (claim template name, size): one Bound PVC per pod, as the controller makes."""
        containers = [(container or name, image, ports or [])]
        ns_sel = {"workload-type": pool} if selector_pool and pool in POOLS else None
        extra: dict[str, Any] = {"serviceName": f"{name}-internal" if ns == "vault" else name,
                                 "podManagementPolicy": "Parallel", "updateStrategy": {"type": "RollingUpdate"}}
        if pvc:
            extra["volumeClaimTemplates"] = [{"metadata": {"name": pvc[0]}, "spec": {
                "accessModes": ["ReadWriteOnce"], "storageClassName": "harvester",
                "resources": {"requests": {"storage": pvc[1]}}}}]
        sts, uid = self._workload("StatefulSet", ns, name, replicas, labels, containers, ns_sel, extra)
        rev = f"{name}-{self.suffix(10)}"
        sts["status"].update(replicas=replicas, readyReplicas=replicas, availableReplicas=replicas,
                             currentReplicas=replicas, updatedReplicas=replicas,
                             currentRevision=rev, updateRevision=rev, collisionCount=0)
        self.add(sts)
        for i in range(replicas):
            pod_name = f"{name}-{i}"
            pod_labels = {**labels, "statefulset.kubernetes.io/pod-name": pod_name,
                          "apps.kubernetes.io/pod-index": str(i), "controller-revision-hash": rev,
                          **(extra_labels or {}).get(i, {})}
            node = nodes[i % len(nodes)] if nodes else self.pick_node(pool)
            self.pod(ns, pod_name, pod_labels, (APPS, "StatefulSet", name, uid), node, containers,
                     node_selector=ns_sel)
            if pvc:
                self.pvc(ns, f"{pvc[0]}-{pod_name}", pvc[1], labels)
        return sts

    def daemonset(self, ns: str, name: str, labels: dict[str, str], image: str,
                  ports: list[int] | None = None) -> Obj:
        containers = [(name if name != "cilium" else "cilium-agent", image, ports or [])]
        ds, uid = self._workload("DaemonSet", ns, name, 0, labels, containers, None,
                                 {"updateStrategy": {"type": "RollingUpdate"}})
        all_nodes = [n for names in self.nodes.values() for n in names]
        count = len(all_nodes)
        ds["spec"]["template"]["spec"]["tolerations"] = [{"operator": "Exists"}]
        ds["status"].update(currentNumberScheduled=count, desiredNumberScheduled=count,
                            numberMisscheduled=0, numberReady=count, numberAvailable=count,
                            updatedNumberScheduled=count)
        self.add(ds)
        rev = self.suffix(10)
        for node in all_nodes:
            self.pod(ns, f"{name}-{self.suffix(5)}", {**labels, "controller-revision-hash": rev,
                                                        "pod-template-generation": "1"},
                     (APPS, "DaemonSet", name, uid), node, containers, tolerate_all=True)
        return ds

    # -- services, storage ---------------------------------------------------------------------
    def service(self, ns: str, name: str, selector: dict[str, str], ports: list[tuple[str, int, int | str]],
                *, cluster_ip: str | None = None, type_: str = "ClusterIP",
                labels: dict[str, str] | None = None, **spec_extra: Any) -> Obj:
        ip = cluster_ip or f"10.43.{self.rng.randint(1, 254)}.{self.rng.randint(1, 254)}"
        spec: dict[str, Any] = {
            "type": type_, "selector": dict(selector), "clusterIP": ip,
            "clusterIPs": [ip] if ip != "None" else ["None"], "ipFamilies": ["IPv4"],
            "ipFamilyPolicy": "SingleStack", "sessionAffinity": "None",
            "internalTrafficPolicy": "Cluster",
            "ports": [{"name": n, "port": port, "targetPort": target, "protocol": "TCP"}
                      for n, port, target in ports], **spec_extra}
        return self.add({"apiVersion": CORE, "kind": "Service",
                         "metadata": self.meta(name, ns, labels or selector),
                         "spec": spec, "status": {"loadBalancer": {}}})

    def pvc(self, ns: str, name: str, size: str, labels: dict[str, str] | None = None) -> Obj:
        pv_name = f"pvc-{self.uid()}"
        claim = self.add({
            "apiVersion": CORE, "kind": "PersistentVolumeClaim",
            "metadata": self.meta(name, ns, labels, annotations={
                "pv.kubernetes.io/bind-completed": "yes", "pv.kubernetes.io/bound-by-controller": "yes",
                "volume.beta.kubernetes.io/storage-provisioner": "driver.harvesterhci.io",
                "volume.kubernetes.io/storage-provisioner": "driver.harvesterhci.io"},
                finalizers=["kubernetes.io/pvc-protection"]),
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": size}},
                     "storageClassName": "harvester", "volumeMode": "Filesystem", "volumeName": pv_name},
            "status": {"phase": "Bound", "accessModes": ["ReadWriteOnce"], "capacity": {"storage": size}},
        })
        self.add({
            "apiVersion": CORE, "kind": "PersistentVolume",
            "metadata": self.meta(pv_name, annotations={"pv.kubernetes.io/provisioned-by": "driver.harvesterhci.io"},
                                  finalizers=["kubernetes.io/pv-protection"]),
            "spec": {"accessModes": ["ReadWriteOnce"], "capacity": {"storage": size},
                     "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "name": name,
                                  "namespace": ns, "uid": claim["metadata"]["uid"]},
                     "csi": {"driver": "driver.harvesterhci.io", "fsType": "ext4", "volumeHandle": pv_name},
                     "persistentVolumeReclaimPolicy": "Delete", "storageClassName": "harvester",
                     "volumeMode": "Filesystem"},
            "status": {"phase": "Bound"},
        })
        return claim

    def pdb(self, ns: str, name: str, selector: dict[str, str], pods: int, *,
            min_available: int | None = None, max_unavailable: int | None = None) -> Obj:
        spec: dict[str, Any] = {"selector": {"matchLabels": dict(selector)}}
        if min_available is not None:
            spec["minAvailable"] = min_available
            desired = min_available
        else:
            spec["maxUnavailable"] = max_unavailable
            desired = pods - (max_unavailable or 0)
        allowed = max(pods - desired, 0)
        return self.add({"apiVersion": POLICY, "kind": "PodDisruptionBudget", "metadata": self.meta(name, ns),
                         "spec": spec, "status": {
                             "currentHealthy": pods, "desiredHealthy": desired, "disruptionsAllowed": allowed,
                             "expectedPods": pods, "observedGeneration": 1,
                             "conditions": [{"type": "DisruptionAllowed", "status": "True" if allowed else "False",
                                             "reason": "SufficientPods" if allowed else "InsufficientPods",
                                             "message": "", "lastTransitionTime": self.created,
                                             "observedGeneration": 1}]}})

    # -- cert-manager, gateways ----------------------------------------------------------------
    def certificate(self, ns: str, secret: str, dns_names: list[str], *, owner: Obj | None = None,
                    labels: dict[str, str] | None = None, leaf: tuple[str, str] | None = None) -> Obj:
        pki = self.vault.pki
        assert pki is not None
        age = self.rng.randint(1, 14)
        not_before = (self.t0 - timedelta(days=age, hours=self.rng.randint(0, 23))).replace(microsecond=0)
        not_after = not_before + timedelta(days=30)
        renewal = not_before + timedelta(days=20)  # cert-manager renews at 2/3 of the lifetime
        crt, key = leaf or pki.issue_leaf(dns_names, not_before, not_after)
        meta = self.meta(secret, ns, labels)
        if owner is not None:
            meta["ownerReferences"] = [{"apiVersion": owner["apiVersion"], "kind": owner["kind"],
                                        "name": owner["metadata"]["name"], "uid": owner["metadata"]["uid"],
                                        "controller": True, "blockOwnerDeletion": True}]
        revision = self.rng.randint(2, 9)
        cert = self.add({
            "apiVersion": CERT_MANAGER, "kind": "Certificate", "metadata": {**meta, "generation": 1},
            "spec": {"secretName": secret, "dnsNames": list(dns_names), "duration": "720h0m0s",
                     "renewBefore": "240h0m0s", "usages": ["digital signature", "key encipherment"],
                     "issuerRef": {"group": "cert-manager.io", "kind": "ClusterIssuer", "name": "vault-issuer"}},
            "status": {"conditions": [{"type": "Ready", "status": "True", "reason": "Ready",
                                       "message": "Certificate is up to date and has not expired",
                                       "lastTransitionTime": iso(not_before), "observedGeneration": 1}],
                       "notBefore": iso(not_before), "notAfter": iso(not_after),
                       "renewalTime": iso(renewal), "revision": revision},
        })
        self.add({
            "apiVersion": CORE, "kind": "Secret", "type": "kubernetes.io/tls",
            "metadata": self.meta(secret, ns, {"controller.cert-manager.io/fao": "true",
                                               "cert-manager.io/certificate-name": secret}, annotations={
                "cert-manager.io/alt-names": ",".join(dns_names), "cert-manager.io/certificate-name": secret,
                "cert-manager.io/common-name": dns_names[0], "cert-manager.io/ip-sans": "",
                "cert-manager.io/issuer-group": "cert-manager.io", "cert-manager.io/issuer-kind": "ClusterIssuer",
                "cert-manager.io/issuer-name": "vault-issuer", "cert-manager.io/uri-sans": ""}),
            "data": {"tls.crt": _b64(crt + pki.intermediate.pem), "tls.key": _b64(key),
                     "ca.crt": _b64(pki.root.pem)},
        })
        self.add({
            "apiVersion": CERT_MANAGER, "kind": "CertificateRequest",
            "metadata": {**self.meta(f"{secret}-{revision}", ns, annotations={
                "cert-manager.io/certificate-name": secret, "cert-manager.io/certificate-revision": str(revision),
                "cert-manager.io/private-key-secret-name": f"{secret}-{self.suffix(5)}"}),
                "creationTimestamp": iso(not_before),
                "ownerReferences": [{"apiVersion": CERT_MANAGER, "kind": "Certificate", "name": secret,
                                     "uid": cert["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}]},
            "spec": {"issuerRef": {"group": "cert-manager.io", "kind": "ClusterIssuer", "name": "vault-issuer"},
                     "request": _b64("-----BEGIN CERTIFICATE REQUEST-----\n...\n-----END CERTIFICATE REQUEST-----\n"),
                     "usages": ["digital signature", "key encipherment"], "duration": "720h0m0s"},
            "status": {"conditions": [
                {"type": "Approved", "status": "True", "reason": "cert-manager.io",
                 "message": "Certificate request has been approved by cert-manager.io", "lastTransitionTime": iso(not_before)},
                {"type": "Ready", "status": "True", "reason": "Issued",
                 "message": "Certificate fetched from issuer successfully", "lastTransitionTime": iso(not_before)}],
                "certificate": _b64(crt), "ca": _b64(pki.intermediate.pem)},
        })
        return cert

    def gateway_route(self, ns: str, host: str, backend: str, port: int) -> None:
        """The runbook's Gateway pattern: listeners on Traefik's entrypoint ports 8000/8443,
        TLS Terminate with a Vault-issued secret the gateway-shim Certificate fills."""
        fqdn = f"{host}.{self.domain}"
        secret = f"{host}-{self.domain.replace('.', '-')}-tls"
        gw_name = f"{host}-gateway"
        kinds = [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute"},
                 {"group": "gateway.networking.k8s.io", "kind": "GRPCRoute"}]
        ok = {"status": "True", "message": "No error found", "lastTransitionTime": self.created,
              "observedGeneration": 1}
        gw = self.add({
            "apiVersion": GATEWAY, "kind": "Gateway",
            "metadata": {**self.meta(gw_name, ns, annotations={"cert-manager.io/cluster-issuer": "vault-issuer"}),
                         "generation": 1},
            "spec": {"gatewayClassName": "traefik", "listeners": [
                {"name": "http", "port": 8000, "protocol": "HTTP", "hostname": fqdn,
                 "allowedRoutes": {"namespaces": {"from": "Same"}}},
                {"name": "https", "port": 8443, "protocol": "HTTPS", "hostname": fqdn,
                 "allowedRoutes": {"namespaces": {"from": "Same"}},
                 "tls": {"mode": "Terminate", "certificateRefs": [{"group": "", "kind": "Secret", "name": secret}]}}]},
            "status": {
                "addresses": [{"type": "IPAddress", "value": LB_IP}],
                "conditions": [{"type": "Accepted", "reason": "Accepted", **ok, "message": "Gateway successfully scheduled"},
                               {"type": "Programmed", "reason": "Programmed", **ok, "message": "Gateway successfully scheduled"}],
                "listeners": [{"name": n, "attachedRoutes": 1, "supportedKinds": kinds, "conditions": [
                    {"type": "Accepted", "reason": "Accepted", **ok},
                    {"type": "ResolvedRefs", "reason": "ResolvedRefs", **ok},
                    {"type": "Programmed", "reason": "Programmed", **ok}]} for n in ("http", "https")]},
        })
        parent = {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": gw_name, "sectionName": "https"}
        self.add({
            "apiVersion": GATEWAY, "kind": "HTTPRoute",
            "metadata": {**self.meta(host, ns), "generation": 1},
            "spec": {"parentRefs": [dict(parent)], "hostnames": [fqdn], "rules": [{
                "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                "backendRefs": [{"group": "", "kind": "Service", "name": backend, "port": port, "weight": 1}]}]},
            "status": {"parents": [{"parentRef": dict(parent), "controllerName": "traefik.io/gateway-controller",
                                    "conditions": [{"type": "Accepted", "reason": "Accepted", **ok},
                                                   {"type": "ResolvedRefs", "reason": "ResolvedRefs", **ok}]}]},
        })
        self.certificate(ns, secret, [fqdn], owner=gw)

    def ingress_route(self, ns: str, name: str, host: str, service: dict[str, Any]) -> None:
        fqdn = f"{host}.{self.domain}"
        secret = f"{host}-{self.domain.replace('.', '-')}-tls"
        self.add({"apiVersion": TRAEFIK, "kind": "IngressRoute",
                  "metadata": self.meta(name, ns, annotations={"kubernetes.io/ingress.class": "traefik"}),
                  "spec": {"entryPoints": ["websecure"], "routes": [
                      {"kind": "Rule", "match": f"Host(`{fqdn}`)", "services": [service]}],
                      "tls": {"secretName": secret}}})
        self.certificate(ns, secret, [fqdn])


def _app(name: str, **more: str) -> dict[str, str]:
    return {"app": name, "app.kubernetes.io/name": name, **more}


# -- the world ---------------------------------------------------------------------------------
def build_platform(size: int = 1, *, seed: int = 0, nodes: int | None = None,
                   pods: int | None = None, certificates: int | None = None,
                   pvcs: int | None = None, vault: VaultCluster | None = None) -> Platform:
    """The healthy baseline. ``size`` 1 is the runbook's 6-node cluster; larger sizes (or the
    explicit ``nodes``/``pods``/``certificates``/``pvcs`` totals) add worker nodes and
    filler workloads in namespace ``workloads`` until the totals are reached."""
    if size < 1:
        raise ValueError("size must be >= 1")
    # Tens of thousands of fresh dicts would trigger repeated full GC passes for nothing:
    # nothing built here is cyclic garbage.
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _build(size, seed, nodes, pods, certificates, pvcs, vault)
    finally:
        if was_enabled:
            gc.enable()


def _build(size: int, seed: int, nodes: int | None, pods: int | None, certificates: int | None,
           pvcs: int | None, vault: VaultCluster | None) -> Platform:
    total_nodes = max(6, nodes if nodes is not None else 6 * size)
    store = ObjectStore()
    vc = vault or VaultCluster.create()
    b = _Builder(store=store, vault=vc, rng=random.Random(seed))
    _cluster_scoped(b)
    _nodes(b, total_nodes)
    _kube_system(b)
    _cilium_state(b)
    _cert_manager(b)
    _vault(b)
    _database(b)
    _services(b)
    _filler(b, size, total_nodes, pods, certificates, pvcs)
    add_resource_metrics(store, seed=seed, skip_namespaces=("workloads",))
    # The Harvester management cluster behind these nodes (their VMs, Machines, volumes).
    _database_clients(store)
    platform = Platform(kube=store, vault=vc, mgmt=build_mgmt(store, seed=seed, t0=b.t0))
    link(platform)
    _database_metrics(platform)
    _coredns_metrics(platform)
    etcd_metrics.install(platform.metrics, [b.node_ips[n] for n in b.nodes["cp"]])
    return platform


# Which app talks to which CNPG cluster, as their Deployments say it (runbook 6.1 step 3).
DB_CLIENTS = {("harbor", "harbor-core"): ("harbor-pg", "POSTGRESQL_HOST"),
              ("keycloak", "keycloak"): ("keycloak-pg", "KC_DB_URL_HOST"),
              ("mattermost", "mattermost"): ("mattermost-pg", "MM_SQLSETTINGS_DATASOURCE"),
              ("kasm", "kasm-api-deployment"): ("kasm-pg", "KASM_DB_HOST")}


def _database_clients(store: ObjectStore) -> None:
    """The apps' database settings: the -rw Service's host, the -app Secret's password."""
    for (ns, name), (cluster, var) in DB_CLIENTS.items():
        def fn(dep: Obj, cluster: str = cluster, var: str = var) -> None:
            c = dep["spec"]["template"]["spec"]["containers"][0]
            c["env"] = [{"name": var, "value": f"{cluster}-rw.database.svc.cluster.local"},
                        {"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": f"{cluster}-app",
                                                                                "key": "password"}}}]
        if store.get(APPS, "Deployment", name, ns) is not None:
            store.update(APPS, "Deployment", name, ns, fn)


def _database_metrics(p: Platform) -> None:
    """What the exporters serve on a healthy platform: CNPG's instance exporter (lag, backends,
    max_connections, WAL archiver), the kubelet's volume stats of the CNPG PVCs, and
    redis_exporter on each Harbor Sentinel (the master it sees)."""
    m, ns = p.metrics, "database"
    for cluster, dbname in CNPG_CLUSTERS.items():
        for i in (1, 2, 3):
            pod = f"{cluster}-{i}"
            labels = {"namespace": ns, "pod": pod}
            m.set("cnpg_pg_replication_lag", labels, 0.0 if i == 1 else 0.2 * i,
                  "Replication lag behind primary in seconds")
            for state, n in ((("active", 12), ("idle", 8)) if i == 1 else (("active", 2),)):
                m.set("cnpg_backends_total", {**labels, "datname": dbname, "usename": dbname,
                                              "application_name": "", "state": state}, n,
                      "Number of backends")
            m.set("cnpg_pg_settings_setting", {**labels, "name": "max_connections"}, 100,
                  "Setting value")
            m.set("kubelet_volume_stats_capacity_bytes", {"namespace": ns, "persistentvolumeclaim": pod},
                  20 * 1024 ** 3)
            m.set("kubelet_volume_stats_used_bytes", {"namespace": ns, "persistentvolumeclaim": pod},
                  (3.5 + i / 4) * 1024 ** 3)
        primary = {"namespace": ns, "pod": f"{cluster}-1"}
        m.set("cnpg_pg_stat_archiver_seconds_since_last_archival", primary, 42.0,
              "Seconds since the last successful archival operation")
        m.set("cnpg_pg_stat_archiver_failed_count", primary, 0, "Number of failed attempts for archiving WAL files")
    redis = p.kube.get(CORE, "Pod", "harbor-redis-0", "harbor")
    if redis is not None:
        address = f"{redis['status']['podIP']}:6379"
        for i in range(3):
            labels = {"namespace": "harbor", "pod": f"harbor-redis-sentinel-{i}", "master_name": "mymaster"}
            m.set("redis_sentinel_master_status", {**labels, "master_address": address, "master_status": "ok"}, 1,
                  "Master status on Sentinel")
            m.set("redis_sentinel_master_ok_sentinels", {**labels, "master_address": address}, 3)
            m.set("redis_sentinel_master_ok_slaves", {**labels, "master_address": address}, 2)


ETCD_SNAPSHOT = "k3s.cattle.io/v1"
SNAPSHOT_EVERY_H = 6   # cluster.tf: etcd_snapshot_schedule_cron every 6 hours, retention 5
SNAPSHOT_RETAIN = 5


def etcd_snapshot(b_or_store: Any, node: str, taken: datetime, *, size: int = 38_797_344,
                  ready: bool = True, error: str = "") -> Obj:
    """One ETCDSnapshotFile as RKE2 records a local snapshot (k3s pkg/etcd/snapshot.go)."""
    stamp = int(taken.timestamp())
    name = f"etcd-snapshot-{node}-{stamp}"
    obj: Obj = {
        "apiVersion": ETCD_SNAPSHOT, "kind": "ETCDSnapshotFile",
        "metadata": {"name": f"local-{name}-{format(stamp * 2654435761 % 2 ** 24, '06x')}",
                     "labels": {"etcd.k3s.cattle.io/snapshot-storage-node": node},
                     "annotations": {"etcd.k3s.cattle.io/snapshot-token-hash": format(stamp, "x")},
                     "creationTimestamp": iso(taken)},
        "spec": {"snapshotName": name, "nodeName": node,
                 "location": f"file:///var/lib/rancher/rke2/server/db/snapshots/{name}"},
        "status": {"readyToUse": ready, "creationTime": iso(taken), "size": str(size)},
    }
    if error:
        obj["status"]["error"] = {"time": iso(taken), "message": error}
    store = b_or_store.store if isinstance(b_or_store, _Builder) else b_or_store
    return store.add(obj)


def _etcd_snapshots(b: _Builder) -> None:
    """The last five 6-hourly snapshots on every etcd node, the newest 2 h old."""
    newest = b.t0.replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)
    for node in b.nodes["cp"]:
        for k in range(SNAPSHOT_RETAIN):
            etcd_snapshot(b, node, newest - timedelta(hours=SNAPSHOT_EVERY_H * k), size=38_797_344 + 4096 * k)


def autoscaler_status(when: datetime, groups: list[dict[str, Any]], *, health: str = "Healthy") -> str:
    """The structured status cluster-autoscaler (>= 1.30) writes to kube-system/cluster-autoscaler-status."""
    stamp = when.strftime("%Y-%m-%d %H:%M:%S.%f") + "000 +0000 UTC"
    ready = sum(g["target"] for g in groups)
    lines = [f"time: {stamp}", "autoscalerStatus: Running", "clusterWide:", "  health:", f"    status: {health}",
             "    nodeCounts:", "      registered:", f"        total: {ready}", f"        ready: {ready}",
             "        notStarted: 0", "      longUnregistered: 0", "      unregistered: 0",
             f"    lastProbeTime: \"{stamp}\"", "  scaleUp:", "    status: NoActivity",
             f"    lastProbeTime: \"{stamp}\"", "  scaleDown:", "    status: NoCandidates",
             f"    lastProbeTime: \"{stamp}\"", "nodeGroups:"]
    for g in groups:
        lines += [f"- name: {g['name']}", "  health:", "    status: Healthy", "    nodeCounts:",
                  "      registered:", f"        total: {g['target']}", f"        ready: {g['target']}",
                  f"    cloudProviderTarget: {g['target']}", f"    minSize: {g['min']}", f"    maxSize: {g['max']}",
                  "  scaleUp:", f"    status: {g.get('scale_up', 'NoActivity')}"]
        if g.get("backoff"):
            lines += ["    backoffInfo:", f"      errorCode: {g['backoff'][0]}", f"      errorMessage: {g['backoff'][1]}"]
        lines += ["  scaleDown:", "    status: NoCandidates"]
    return "\n".join(lines) + "\n"


AUTOSCALER_GROUPS = [{"name": "fleet-default/rke2-general", "target": 1, "min": 1, "max": 5},
                     {"name": "fleet-default/rke2-compute", "target": 1, "min": 0, "max": 3}]


_STAMP = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+ \+0000 UTC")


def refresh_autoscaler_status(store: ObjectStore, when: datetime) -> None:
    """What the running autoscaler does every scan: rewrite its status's times (and only them, so
    a scenario's health or backoff stays). Without it a sandbox up 10 minutes reads as stale."""
    stamp = when.strftime("%Y-%m-%d %H:%M:%S.%f") + "000 +0000 UTC"

    def fresh(cm: Obj) -> None:
        cm["data"]["status"] = _STAMP.sub(stamp, cm["data"].get("status", ""))
        cm["metadata"].setdefault("annotations", {})["cluster-autoscaler.kubernetes.io/last-updated"] = stamp
    try:
        store.update(CORE, "ConfigMap", "cluster-autoscaler-status", "kube-system", fresh)
    except LookupError:
        pass  # a scenario removed it: that is what it shows


def _autoscaler_status(b: _Builder) -> None:
    b.add({"apiVersion": CORE, "kind": "ConfigMap",
           "metadata": b.meta("cluster-autoscaler-status", "kube-system", annotations={
               "cluster-autoscaler.kubernetes.io/last-updated": b.t0.strftime("%Y-%m-%d %H:%M:%S.%f") + "000 +0000 UTC"}),
           "data": {"status": autoscaler_status(b.t0, AUTOSCALER_GROUPS)}})


def _cluster_scoped(b: _Builder) -> None:
    for ns in (*NAMESPACES,):
        _namespace(b, ns)
    b.add({"apiVersion": STORAGE, "kind": "StorageClass",
           "metadata": b.meta("harvester", annotations={"storageclass.kubernetes.io/is-default-class": "true"}),
           "provisioner": "driver.harvesterhci.io", "allowVolumeExpansion": True,
           "reclaimPolicy": "Delete", "volumeBindingMode": "Immediate", "parameters": {"hostStorageClass": "harvester-longhorn"}})
    b.add({"apiVersion": GATEWAY, "kind": "GatewayClass", "metadata": {**b.meta("traefik"), "generation": 1},
           "spec": {"controllerName": "traefik.io/gateway-controller"},
           "status": {"conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted",
                                      "message": "Handled by Traefik controller", "lastTransitionTime": b.created,
                                      "observedGeneration": 1}]}})
    b.add({"apiVersion": CILIUM_ALPHA, "kind": "CiliumL2AnnouncementPolicy", "metadata": b.meta("default-l2-policy"),
           "spec": {"interfaces": ["^eth[0-9]+"], "externalIPs": True, "loadBalancerIPs": True}})
    b.add({"apiVersion": CILIUM_ALPHA, "kind": "CiliumLoadBalancerIPPool", "metadata": b.meta("default-pool"),
           "spec": {"blocks": [{"cidr": "203.0.113.200/29"}], "disabled": False},
           "status": {"conditions": [
               # LB IPAM's counts, in condition messages as the operator writes them (Traefik holds one address).
               {"type": "cilium.io/IPsTotal", "status": "Unknown", "reason": "noreason", "message": "8", "lastTransitionTime": b.created},
               {"type": "cilium.io/IPsAvailable", "status": "Unknown", "reason": "noreason", "message": "7", "lastTransitionTime": b.created},
               {"type": "cilium.io/IPsUsed", "status": "Unknown", "reason": "noreason", "message": "1", "lastTransitionTime": b.created},
               {"type": "cilium.io/PoolConflict", "status": "False", "reason": "noReason", "message": "", "lastTransitionTime": b.created}]}})


def _namespace(b: _Builder, ns: str) -> None:
    b.add({"apiVersion": CORE, "kind": "Namespace",
           "metadata": b.meta(ns, labels={"kubernetes.io/metadata.name": ns}),
           "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}})
    b.add({"apiVersion": CORE, "kind": "ConfigMap", "metadata": b.meta("kube-root-ca.crt", ns),
           "data": {"ca.crt": b.vault.pki.kube_ca.pem if b.vault.pki else ""}})
    b.add({"apiVersion": CORE, "kind": "ServiceAccount", "metadata": b.meta("default", ns)})
    # The runbook's distribute_root_ca: the Vault root CA in every namespace (4.4 step 3c, 4.5).
    b.add({"apiVersion": CORE, "kind": "ConfigMap", "metadata": b.meta("vault-root-ca", ns),
           "data": {"ca.crt": b.vault.pki.root.pem if b.vault.pki else ""}})


def _nodes(b: _Builder, total: int) -> None:
    for i, name in enumerate(CP_NODES):
        b.node(name, "cp", i)
    workers = total - len(CP_NODES)
    # One of each pool first (the runbook's minimum), then 2 general : 1 compute : 1 database.
    counts = {"general": 1, "compute": 1, "database": 1}
    for j in range(workers - 3):
        counts[("general", "general", "compute", "database")[j % 4]] += 1
    i = len(CP_NODES)
    for pool in POOLS:
        for k in range(1, counts[pool] + 1):
            b.node(worker_name(pool, k), pool, i)
            i += 1


def _kube_system(b: _Builder) -> None:
    ks = "kube-system"
    for node in b.nodes["cp"]:
        for comp, image, port in (("etcd", "rancher/hardened-etcd:v3.5.21-k3s1", 2379),
                                  ("kube-apiserver", "rancher/hardened-kubernetes:v1.34.2-rke2r1", 6443),
                                  ("kube-controller-manager", "rancher/hardened-kubernetes:v1.34.2-rke2r1", 10257),
                                  ("kube-scheduler", "rancher/hardened-kubernetes:v1.34.2-rke2r1", 10259),
                                  ("cloud-controller-manager", "rancher/rke2-cloud-provider:v1.34.2-rke2r1", 10258)):
            b.pod(ks, f"{comp}-{node}", {"component": comp, "tier": "control-plane"},
                  ("v1", "Node", node, b.store.get(CORE, "Node", node)["metadata"]["uid"]),  # type: ignore[index]
                  node, [(comp, image, [port])], tolerate_all=True,
                  extra_meta={"annotations": {"kubernetes.io/config.source": "file",
                                              "kubernetes.io/config.mirror": b.uid().replace("-", "")}})
    b.daemonset(ks, "cilium", {"k8s-app": "cilium", "app.kubernetes.io/name": "cilium-agent",
                               "app.kubernetes.io/part-of": "cilium"}, "rancher/mirrored-cilium-cilium:v1.18.1", [9962])
    b.deployment(ks, "cilium-operator", 2, {"io.cilium/app": "operator", "name": "cilium-operator",
                                            "app.kubernetes.io/name": "cilium-operator"},
                 "rancher/mirrored-cilium-operator-generic:v1.18.1", [9963], selector_pool=False)
    b.add({"apiVersion": CORE, "kind": "ConfigMap", "metadata": b.meta("cilium-config", ks),
           "data": {"enable-l2-announcements": "true", "kube-proxy-replacement": "true",
                    "k8s-service-host": "127.0.0.1", "k8s-service-port": "6443",
                    "routing-mode": "tunnel", "tunnel-protocol": "vxlan", "enable-gateway-api": "false",
                    "cluster-pool-ipv4-cidr": "10.42.0.0/16"}})
    coredns = {"app.kubernetes.io/name": "rke2-coredns", "app.kubernetes.io/instance": "rke2-coredns",
               "k8s-app": "kube-dns"}
    b.deployment(ks, "rke2-coredns-rke2-coredns", 2, coredns, "rancher/hardened-coredns:v1.12.3-build20250812",
                 [53, 9153], selector_pool=False, container="coredns")
    b.service(ks, "kube-dns", {"k8s-app": "kube-dns"}, [("udp-53", 53, 53), ("tcp-53", 53, 53)],
              cluster_ip="10.43.0.10", labels=coredns)
    traefik = {"app.kubernetes.io/name": "rke2-traefik", "app.kubernetes.io/instance": "rke2-traefik-kube-system"}
    b.deployment(ks, "rke2-traefik", 2, traefik, "rancher/mirrored-library-traefik:3.5.1",
                 [8000, 8443, 9100], selector_pool=False, container="rke2-traefik")
    svc = b.service(ks, "rke2-traefik", traefik, [("web", 80, "web"), ("websecure", 443, "websecure")],
                    type_="LoadBalancer", loadBalancerIP=LB_IP, externalTrafficPolicy="Cluster",
                    allocateLoadBalancerNodePorts=True)
    b.store.update(CORE, "Service", "rke2-traefik", ks, lambda s: s.update(
        status={"loadBalancer": {"ingress": [{"ip": LB_IP, "ipMode": "VIP"}]}}))
    for i, port in enumerate(svc["spec"]["ports"]):
        port["nodePort"] = 30080 + i * 363
    b.add({"apiVersion": HELM, "kind": "HelmChartConfig", "metadata": b.meta("rke2-traefik", ks),
           "spec": {"valuesContent": "service:\n  spec:\n    loadBalancerIP: 203.0.113.202\n"
                    "ports:\n  web:\n    transport:\n      respondingTimeouts:\n        readTimeout: 1800s\n"
                    "  websecure:\n    transport:\n      respondingTimeouts:\n        readTimeout: 1800s\n"
                    "providers:\n  kubernetesGateway:\n    enabled: true\n"}})
    b.add({"apiVersion": TRAEFIK, "kind": "TLSStore", "metadata": b.meta("default", ks),
           "spec": {"defaultCertificate": {"secretName": f"wildcard-{b.domain.replace('.', '-')}-tls"}}})
    b.certificate(ks, f"wildcard-{b.domain.replace('.', '-')}-tls", [f"*.{b.domain}", b.domain])
    b.ingress_route(ks, "traefik-dashboard", "traefik", {"kind": "TraefikService", "name": "api@internal"})
    b.deployment(ks, "rke2-metrics-server", 1, {"app": "rke2-metrics-server"},
                 "rancher/hardened-k8s-metrics-server:v0.8.0", [10250], selector_pool=False, container="metrics-server")
    b.deployment(ks, "harvester-cloud-provider", 1, {"app.kubernetes.io/name": "harvester-cloud-provider",
                                                     "app.kubernetes.io/instance": "harvester-cloud-provider"},
                 "rancher/harvester-cloud-provider:v0.2.10", [], selector_pool=False)
    _etcd_snapshots(b)
    b.deployment(ks, "rancher-cluster-autoscaler", 1, {"app": "cluster-autoscaler",
                                                       "app.kubernetes.io/name": "rancher-cluster-autoscaler"},
                 "rancher/cluster-autoscaler:v1.33.0", [8085], selector_pool=False, container="cluster-autoscaler")
    _autoscaler_status(b)
    b.service("default", "kubernetes", {}, [("https", 443, 6443)], cluster_ip="10.43.0.1",
              labels={"component": "apiserver", "provider": "kubernetes"})
    b.deployment("cattle-system", "cattle-cluster-agent", 2, {"app": "cattle-cluster-agent"},
                 "rancher/rancher-agent:v2.12.1", [], selector_pool=False)


def _cilium_state(b: _Builder) -> None:
    """What the Cilium agents and operator keep in the API (runbook 3.x): a CiliumNode per node,
    the L2 announcement lease for Traefik's address, LB IPAM's condition on the Service, and the
    kube-dns EndpointSlice over the CoreDNS pods."""
    ks = "kube-system"
    for name, ip in b.node_ips.items():
        i = b.node_index[name]
        b.add({"apiVersion": "cilium.io/v2", "kind": "CiliumNode",
               "metadata": b.meta(name, labels={"kubernetes.io/hostname": name}),
               "spec": {"addresses": [{"type": "InternalIP", "ip": ip},
                                      {"type": "CiliumInternalIP", "ip": f"10.{42 + i // 256}.{i % 256}.1"}],
                        "health": {"ipv4": f"10.{42 + i // 256}.{i % 256}.2"},
                        "ipam": {"podCIDRs": [f"10.{42 + i // 256}.{i % 256}.0/24"]}},
               "status": {"ipam": {"operator-status": {}}}})
    holder = b.nodes["general"][0]
    b.add({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
           "metadata": b.meta("cilium-l2announce-kube-system-rke2-traefik", ks),
           "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15, "leaseTransitions": 0,
                    "acquireTime": b.created.replace("Z", ".000000Z"), "renewTime": iso(b.t0).replace("Z", ".000000Z")}})
    b.store.update(CORE, "Service", "rke2-traefik", ks, lambda s: s["status"].setdefault("conditions", []).append(
        {"type": "cilium.io/IPAMRequestSatisfied", "status": "True", "reason": "satisfied", "message": "",
         "lastTransitionTime": b.created, "observedGeneration": 0}))
    pods = [p for p in b.store.list(CORE, "Pod", ks)
            if p["metadata"]["labels"].get("app.kubernetes.io/name") == "rke2-coredns"]
    b.add({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
           "metadata": b.meta(f"kube-dns-{b.suffix(5)}", ks, {"kubernetes.io/service-name": "kube-dns",
                                                             "endpointslice.kubernetes.io/managed-by":
                                                                 "endpointslice-controller.k8s.io"}),
           "addressType": "IPv4",
           "endpoints": [{"addresses": [p["status"]["podIP"]], "nodeName": p["spec"]["nodeName"],
                          "conditions": {"ready": True, "serving": True, "terminating": False},
                          "targetRef": {"kind": "Pod", "namespace": ks, "name": p["metadata"]["name"],
                                        "uid": p["metadata"]["uid"]}} for p in pods],
           "ports": [{"name": "udp-53", "port": 53, "protocol": "UDP"}, {"name": "tcp-53", "port": 53, "protocol": "TCP"}]})


def _coredns_metrics(p: Platform) -> None:
    """What CoreDNS's prometheus plugin serves (:9153, the runbook's scrape job 7): answers by
    rcode growing scrape after scrape (so rate() has a trend), a trickle of SERVFAIL, no
    forward rejections."""
    zone = {"server": "dns://:53", "zone": ".", "view": "", "plugins": ""}
    for pod in ("rke2-coredns-rke2-coredns-0", "rke2-coredns-rke2-coredns-1"):
        labels = {"namespace": "kube-system", "pod": pod, **zone}
        p.metrics.set("coredns_dns_responses_total", {**labels, "rcode": "NOERROR"}, lambda n: 5000.0 + 400.0 * n,
                      "Counter of response status codes.")
        p.metrics.set("coredns_dns_responses_total", {**labels, "rcode": "NXDOMAIN"}, lambda n: 800.0 + 60.0 * n)
        p.metrics.set("coredns_dns_responses_total", {**labels, "rcode": "SERVFAIL"}, lambda n: 3.0 + 0.2 * n)
        p.metrics.set("coredns_forward_max_concurrent_rejects_total", {"namespace": "kube-system", "pod": pod}, 0.0,
                      "Counter of the number of queries rejected because the concurrent queries were at maximum.")


def _cert_manager(b: _Builder) -> None:
    ns = "cert-manager"
    for name, comp in (("cert-manager", "controller"), ("cert-manager-cainjector", "cainjector"),
                       ("cert-manager-webhook", "webhook")):
        dep = b.deployment(ns, name, 1, {"app": name.replace("cert-manager-", "") if comp != "controller" else "cert-manager",
                                         "app.kubernetes.io/name": name.replace("cert-manager-", "") if comp != "controller" else "cert-manager",
                                         "app.kubernetes.io/instance": "cert-manager",
                                         "app.kubernetes.io/component": comp},
                           f"quay.io/jetstack/{name}-{comp if comp != 'controller' else 'controller'}:v1.18.2",
                           [9402], container=f"{name}-{comp}" if comp != "controller" else "cert-manager-controller")
        if comp == "controller":
            dep["spec"]["template"]["spec"]["containers"][0]["args"] = [
                "--v=2", "--cluster-resource-namespace=$(POD_NAMESPACE)",
                "--leader-election-namespace=kube-system", "--enable-gateway-api"]
    b.add({"apiVersion": CORE, "kind": "ServiceAccount", "metadata": b.meta("vault-issuer", ns)})
    b.add({"apiVersion": CORE, "kind": "Secret", "type": "kubernetes.io/service-account-token",
           "metadata": b.meta("vault-issuer-token", ns, annotations={"kubernetes.io/service-account.name": "vault-issuer"}),
           "data": {"token": _b64("eyJhbGciOiJSUzI1NiJ9.sandbox.token"), "namespace": _b64(ns),
                    "ca.crt": _b64(b.vault.pki.kube_ca.pem if b.vault.pki else "")}})
    role = b.domain.replace(".", "-dot-")
    b.add({"apiVersion": CERT_MANAGER, "kind": "ClusterIssuer",
           "metadata": {**b.meta("vault-issuer"), "generation": 1},
           "spec": {"vault": {"server": "http://vault.vault.svc.cluster.local:8200",
                              "path": f"pki_int/sign/{role}",
                              "auth": {"kubernetes": {"role": "cert-manager-issuer", "mountPath": "/v1/auth/kubernetes",
                                                      "serviceAccountRef": {"name": "vault-issuer"}}}}},
           "status": {"conditions": [{"type": "Ready", "status": "True", "reason": "VaultVerified",
                                      "message": "Vault verified", "lastTransitionTime": b.created,
                                      "observedGeneration": 1}]}})


def _vault(b: _Builder) -> None:
    ns = "vault"
    labels = {"app.kubernetes.io/name": "vault", "app.kubernetes.io/instance": "vault", "component": "server"}
    # Anti-affinity spreads the replicas; prefer database-pool nodes, then the other pools.
    spread = [*b.nodes.get("database", []), *b.nodes.get("general", []), *b.nodes.get("compute", [])]
    vc = b.vault
    per_pod = {r.index: {"vault-active": str(vc.is_active(r.index)).lower(),
                         "vault-sealed": str(r.sealed).lower(), "vault-initialized": str(r.initialized).lower(),
                         "vault-version": vc.version, "helm.sh/chart": "vault-0.30.1"}
               for r in vc.replicas}
    nodes = [spread[i * max(1, len(spread) // 3) % len(spread)] for i in range(3)]
    if len(set(nodes)) < 3:
        nodes = spread[:3]
    b.statefulset(ns, "vault", len(vc.replicas), labels, f"hashicorp/vault:{vc.version}", [8200, 8201, 8202],
                  "database", pvc=("data", "10Gi"), nodes=nodes, selector_pool=False, container="vault",
                  extra_labels=per_pod)
    ports = [("http", 8200, 8200), ("https-internal", 8201, 8201)]
    b.service(ns, "vault", labels, ports)
    b.service(ns, "vault-active", {**labels, "vault-active": "true"}, ports)
    b.service(ns, "vault-standby", {**labels, "vault-active": "false"}, ports)
    b.service(ns, "vault-internal", labels, ports, cluster_ip="None", publishNotReadyAddresses=True)
    b.service(ns, "vault-ui", labels, [("http", 8200, 8200)])
    b.pdb(ns, "vault", labels, len(vc.replicas), max_unavailable=1)
    b.deployment(ns, "vault-agent-injector", 1, {"app.kubernetes.io/name": "vault-agent-injector",
                                                 "app.kubernetes.io/instance": "vault", "component": "webhook"},
                 "hashicorp/vault-k8s:1.6.2", [8080], container="sidecar-injector")
    b.gateway_route(ns, "vault", "vault-ui", 8200)
    _vault_raft_objects(b, ns, labels)
    b.add({"apiVersion": CORE, "kind": "Secret", "type": "Opaque",
           "metadata": b.meta("vault-init", "terraform-state"),
           "data": {"vault-init.json": _b64(json.dumps(vc.init_json()))}})


def _vault_raft_objects(b: _Builder, ns: str, labels: dict[str, str]) -> None:
    """The headless vault-internal Service's Endpoints (every pod, ready or not, since it
    publishes not-ready addresses: Raft peers find each other by these names) and the weekly
    Raft snapshot CronJob of runbook 11.5 with its last successful run two days ago."""
    pods = sorted((p for p in b.store.list(CORE, "Pod", ns)
                   if all((p["metadata"].get("labels") or {}).get(k) == v for k, v in labels.items())),
                  key=lambda p: p["metadata"]["name"])
    addresses = [{"ip": p["status"]["podIP"], "hostname": p["metadata"]["name"], "nodeName": p["spec"]["nodeName"],
                  "targetRef": {"kind": "Pod", "namespace": ns, "name": p["metadata"]["name"],
                                "uid": p["metadata"]["uid"]}} for p in pods]
    b.add({"apiVersion": CORE, "kind": "Endpoints",
           "metadata": b.meta("vault-internal", ns, {**labels, "service.kubernetes.io/headless": ""}),
           "subsets": [{"addresses": addresses,
                        "ports": [{"name": "http", "port": 8200, "protocol": "TCP"},
                                  {"name": "https-internal", "port": 8201, "protocol": "TCP"}]}]})
    b.add({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": b.meta("vault-raft-snapshot", ns),
           "spec": {"schedule": "0 3 * * 0", "concurrencyPolicy": "Forbid", "suspend": False,
                    "successfulJobsHistoryLimit": 4, "failedJobsHistoryLimit": 1,
                    "jobTemplate": {"spec": {"template": {"spec": {
                        "restartPolicy": "OnFailure", "serviceAccountName": "vault-snapshot",
                        "containers": [{"name": "snapshot", "image": f"hashicorp/vault:{b.vault.version}",
                                        "command": ["vault", "operator", "raft", "snapshot", "save",
                                                    "/snapshots/vault-raft.snap"]}]}}}}},
           "status": {"lastScheduleTime": b.ago(days=2), "lastSuccessfulTime": b.ago(days=2, minutes=-1)}})


def _database(b: _Builder) -> None:
    ns = "database"
    b.deployment("cnpg-system", "cnpg-controller-manager", 1,
                 {"app.kubernetes.io/name": "cloudnative-pg", "app.kubernetes.io/instance": "cnpg"},
                 "ghcr.io/cloudnative-pg/cloudnative-pg:1.27.0", [9443, 8080], container="manager")
    for cluster, dbname in CNPG_CLUSTERS.items():
        _cnpg_cluster(b, ns, cluster, dbname)


def _cnpg_cluster(b: _Builder, ns: str, name: str, dbname: str, instances: int = 3) -> None:
    image = "ghcr.io/cloudnative-pg/postgresql:16.4"
    uid = b.uid()
    pods = [f"{name}-{i}" for i in range(1, instances + 1)]
    owner = (CNPG, "Cluster", name, uid)
    for i, pod in enumerate(pods):
        role = "primary" if i == 0 else "replica"
        labels = {"cnpg.io/cluster": name, "cnpg.io/instanceName": pod, "cnpg.io/podRole": "instance",
                  "cnpg.io/instanceRole": role, "role": role}
        b.pod(ns, pod, labels, owner, b.pick_node("database"), [("postgres", image, [5432, 9187, 8000])],
              node_selector={"workload-type": "database"}, sa=name)
        claim = b.pvc(ns, pod, "20Gi", {"cnpg.io/cluster": name, "cnpg.io/instanceName": pod,
                                        "cnpg.io/instanceRole": role, "cnpg.io/pvcRole": "PG_DATA"})
        claim["metadata"]["ownerReferences"] = [{"apiVersion": CNPG, "kind": "Cluster", "name": name,
                                                 "uid": uid, "controller": True, "blockOwnerDeletion": True}]
    backup_time = b.t0.replace(hour=2, minute=0, second=0) - timedelta(days=1 if b.t0.hour < 3 else 0)
    b.add({
        "apiVersion": CNPG, "kind": "Cluster",
        "metadata": {**b.meta(name, ns), "uid": uid, "generation": 1},
        "spec": {"instances": instances, "imageName": image, "primaryUpdateStrategy": "unsupervised",
                 "storage": {"size": "20Gi", "storageClass": "harvester"},
                 "affinity": {"nodeSelector": {"workload-type": "database"}, "enablePodAntiAffinity": True,
                              "podAntiAffinityType": "preferred"},
                 "bootstrap": {"initdb": {"database": dbname, "owner": dbname}},
                 "postgresql": {"parameters": {"max_connections": "100"}},
                 "backup": {"retentionPolicy": "7d", "barmanObjectStore": {
                     "destinationPath": f"s3://cnpg-backups/{name}", "endpointURL": "http://minio.minio.svc.cluster.local:9000",
                     "s3Credentials": {"accessKeyId": {"name": f"{name}-backup-creds", "key": "ACCESS_KEY_ID"},
                                       "secretAccessKey": {"name": f"{name}-backup-creds", "key": "ACCESS_SECRET_KEY"}}}}},
        "status": {"phase": "Cluster in healthy state", "instances": instances, "readyInstances": instances,
                   "currentPrimary": pods[0], "targetPrimary": pods[0],
                   "currentPrimaryTimestamp": b.ago(days=12), "targetPrimaryTimestamp": b.ago(days=12),
                   "instanceNames": pods, "instancesStatus": {"healthy": list(pods)},
                   "latestGeneratedNode": instances, "writeService": f"{name}-rw", "readService": f"{name}-r",
                   "image": image, "firstRecoverabilityPoint": b.ago(days=7),
                   "lastSuccessfulBackup": iso(backup_time),
                   "conditions": [
                       {"type": "Ready", "status": "True", "reason": "ClusterIsReady", "message": "Cluster is Ready",
                        "lastTransitionTime": b.ago(days=12)},
                       {"type": "ContinuousArchiving", "status": "True", "reason": "ContinuousArchivingSuccess",
                        "message": "Continuous archiving is working", "lastTransitionTime": b.ago(days=12)},
                       {"type": "LastBackupSucceeded", "status": "True", "reason": "LastBackupSucceeded",
                        "message": "", "lastTransitionTime": iso(backup_time)}]},
    })
    for suffix, role in (("rw", "primary"), ("ro", "replica"), ("r", None)):
        sel = {"cnpg.io/cluster": name, **({"cnpg.io/instanceRole": role} if role else {})}
        b.service(ns, f"{name}-{suffix}", sel, [("postgres", 5432, 5432)], labels={"cnpg.io/cluster": name})
    b.pdb(ns, name, {"cnpg.io/cluster": name, "cnpg.io/instanceRole": "replica"}, instances - 1, min_available=instances - 2)
    b.pdb(ns, f"{name}-primary", {"cnpg.io/cluster": name, "cnpg.io/instanceRole": "primary"}, 1, min_available=1)
    b.add({"apiVersion": CORE, "kind": "Secret", "type": "Opaque", "metadata": b.meta(f"{name}-backup-creds", ns),
           "data": {"ACCESS_KEY_ID": _b64("cnpg"), "ACCESS_SECRET_KEY": _b64(b.uid())}})
    b.add({"apiVersion": CNPG, "kind": "ScheduledBackup", "metadata": b.meta(f"{name}-daily", ns),
           "spec": {"schedule": "0 0 2 * * *", "cluster": {"name": name}, "backupOwnerReference": "self",
                    "method": "barmanObjectStore", "immediate": True},
           "status": {"lastCheckTime": iso(backup_time), "lastScheduleTime": iso(backup_time),
                      "nextScheduleTime": iso(backup_time + timedelta(days=1))}})
    b.add({"apiVersion": CNPG, "kind": "Backup",
           "metadata": b.meta(f"{name}-daily-{backup_time.strftime('%Y%m%d%H%M%S')}", ns, {"cnpg.io/cluster": name,
                                                                                            "cnpg.io/scheduled-backup": f"{name}-daily"}),
           "spec": {"cluster": {"name": name}, "method": "barmanObjectStore"},
           "status": {"phase": "completed", "method": "barmanObjectStore", "backupId": backup_time.strftime("%Y%m%dT%H%M%S"),
                      "startedAt": iso(backup_time), "stoppedAt": iso(backup_time + timedelta(minutes=3)),
                      "destinationPath": f"s3://cnpg-backups/{name}", "serverName": name,
                      "instanceID": {"podName": f"{name}-2", "ContainerID": b.uid()}}})


def _services(b: _Builder) -> None:
    """Runbook ch. 7: Harbor, MinIO, Keycloak, Mattermost, monitoring, Kasm, ArgoCD, Argo
    Rollouts, Uptime Kuma, plus node-labeler and storage-autoscaler."""
    h = "harbor"
    for comp, port in (("core", 8080), ("registry", 5000), ("portal", 8080), ("jobservice", 8080)):
        b.deployment(h, f"harbor-{comp}", 1, {"app": "harbor", "component": comp, "release": "harbor",
                                              "app.kubernetes.io/name": "harbor", "app.kubernetes.io/instance": "harbor",
                                              "app.kubernetes.io/component": comp},
                     f"goharbor/harbor-{comp}:v2.13.2", [port], container=comp)
        b.service(h, f"harbor-{comp}", {"app": "harbor", "component": comp}, [("http", 80, port)])
    b.statefulset(h, "harbor-trivy", 1, {"app": "harbor", "component": "trivy"}, "goharbor/trivy-adapter-photon:v2.13.2",
                  [8080], pvc=("data", "5Gi"), container="trivy")
    b.statefulset(h, "harbor-redis", 3, {"app": "harbor-redis"}, "bitnami/redis:7.4", [6379], container="redis")
    b.statefulset(h, "harbor-redis-sentinel", 3, {"app": "harbor-redis-sentinel"}, "bitnami/redis-sentinel:7.4",
                  [26379], container="sentinel")
    b.gateway_route(h, "harbor", "harbor-core", 80)
    b.deployment("minio", "minio", 1, _app("minio"), "quay.io/minio/minio:RELEASE.2025-04-22T22-12-26Z", [9000, 9001])
    b.service("minio", "minio", {"app": "minio"}, [("api", 9000, 9000), ("console", 9001, 9001)])
    b.pvc("minio", "minio", "200Gi", {"app": "minio"})

    b.deployment("keycloak", "keycloak", 2, _app("keycloak"), "quay.io/keycloak/keycloak:26.3.2", [8080, 9000])
    b.service("keycloak", "keycloak", {"app": "keycloak"}, [("http", 8080, 8080)])
    b.gateway_route("keycloak", "keycloak", "keycloak", 8080)

    mm = "mattermost"
    b.deployment(mm, "mattermost", 1, _app("mattermost"), "mattermost/mattermost-team-edition:10.11.1", [8065])
    b.service(mm, "mattermost", {"app": "mattermost"}, [("http", 8065, 8065)])
    b.deployment(mm, "mattermost-minio", 1, _app("mattermost-minio"), "quay.io/minio/minio:RELEASE.2025-04-22T22-12-26Z", [9000])
    b.pvc(mm, "mattermost-minio", "50Gi", {"app": "mattermost-minio"})
    b.gateway_route(mm, "mattermost", "mattermost", 8065)

    mon = "monitoring"
    b.statefulset(mon, "prometheus", 1, _app("prometheus"), "quay.io/prometheus/prometheus:v3.5.0", [9090],
                  pvc=("prometheus-data", "100Gi"))
    b.service(mon, "prometheus", {"app": "prometheus"}, [("http", 9090, 9090)])
    b.statefulset(mon, "alertmanager", 1, _app("alertmanager"), "quay.io/prometheus/alertmanager:v0.28.1", [9093],
                  pvc=("alertmanager-data", "5Gi"))
    b.service(mon, "alertmanager", {"app": "alertmanager"}, [("http", 9093, 9093)])
    b.deployment(mon, "grafana", 1, _app("grafana"), "grafana/grafana:12.1.1", [3000])
    b.service(mon, "grafana", {"app": "grafana"}, [("http", 3000, 3000)])
    b.pvc(mon, "grafana", "10Gi", {"app": "grafana"})
    b.statefulset(mon, "loki", 1, _app("loki"), "grafana/loki:3.5.3", [3100], pvc=("storage", "50Gi"))
    b.service(mon, "loki", {"app": "loki"}, [("http", 3100, 3100)])
    b.daemonset(mon, "alloy", {"app.kubernetes.io/name": "alloy", "app.kubernetes.io/instance": "alloy"},
                "grafana/alloy:v1.10.1", [12345])
    b.add({"apiVersion": CORE, "kind": "ConfigMap", "metadata": b.meta("alloy-config", mon),
           "data": {"config.alloy": 'loki.write "default" {\n  endpoint { url = "http://loki.monitoring.svc:3100/loki/api/v1/push" }\n}\n'}})
    b.daemonset(mon, "node-exporter", _app("node-exporter"), "quay.io/prometheus/node-exporter:v1.9.1", [9100])
    b.deployment(mon, "kube-state-metrics", 1, _app("kube-state-metrics"),
                 "registry.k8s.io/kube-state-metrics/kube-state-metrics:v2.16.0", [8080])
    for target, port in (("prometheus", 9090), ("alertmanager", 9093)):
        name = f"oauth2-proxy-{target}"
        b.deployment(mon, name, 1, {"app": name, "app.kubernetes.io/name": "oauth2-proxy", "app.kubernetes.io/instance": name},
                     "quay.io/oauth2-proxy/oauth2-proxy:v7.12.0", [4180], container="oauth2-proxy")
        b.service(mon, name, {"app": name}, [("http", 4180, 4180)])
        b.add({"apiVersion": CORE, "kind": "Secret", "type": "Opaque", "metadata": b.meta(name, mon),
               "data": {"client-id": _b64(target), "client-secret": _b64(b.uid()), "cookie-secret": _b64(b.uid()[:32])}})
        b.gateway_route(mon, target, name, 4180)
    b.gateway_route(mon, "grafana", "grafana", 3000)

    k = "kasm"
    for comp, port in (("api", 8080), ("manager", 8181), ("proxy", 8080), ("share", 8182)):
        b.deployment(k, f"kasm-{comp}-deployment", 1, {"app.kubernetes.io/name": "kasm", "app.kubernetes.io/instance": "kasm",
                                                       "app.kubernetes.io/component": comp},
                     f"kasmweb/{comp}:1.17.0", [port], container=f"kasm-{comp}")
        b.service(k, f"kasm-{comp}", {"app.kubernetes.io/name": "kasm", "app.kubernetes.io/component": comp},
                  [("http", port, port)])
    b.deployment(k, "kasm-agent", 1, {"app.kubernetes.io/name": "kasm", "app.kubernetes.io/instance": "kasm",
                                      "app.kubernetes.io/component": "agent"},
                 f"harbor.{b.domain}/kasm/agent:1.17.0", [4444], pool="compute")
    b.ingress_route(k, "kasm", "kasm", {"kind": "Service", "name": "kasm-proxy", "port": 8080})

    a = "argocd"
    for comp, port in (("server", 8080), ("repo-server", 8081), ("redis", 6379),
                       ("applicationset-controller", 7000), ("application-controller", 8082)):
        b.deployment(a, f"argocd-{comp}", 1, {"app.kubernetes.io/name": f"argocd-{comp}", "app.kubernetes.io/part-of": "argocd"},
                     "quay.io/argoproj/argocd:v3.1.1", [port])
    b.service(a, "argocd-server", {"app.kubernetes.io/name": "argocd-server"}, [("http", 80, 8080)])
    b.gateway_route(a, "argocd", "argocd-server", 80)
    b.add({"apiVersion": ARGO, "kind": "AppProject", "metadata": b.meta("default", a),
           "spec": {"sourceRepos": ["*"], "destinations": [{"namespace": "*", "server": "*"}],
                    "clusterResourceWhitelist": [{"group": "*", "kind": "*"}]}})
    for app, dest in (("monitoring-stack", "monitoring"), ("keycloak", "keycloak"), ("mattermost", "mattermost"),
                      ("kasm", "kasm"), ("uptime-kuma", "uptime-kuma")):
        b.add({"apiVersion": ARGO, "kind": "Application", "metadata": b.meta(app, a),
               "spec": {"project": "default", "destination": {"server": "https://kubernetes.default.svc", "namespace": dest},
                        "source": {"repoURL": f"https://gitlab.{b.domain}/platform/services.git",
                                   "path": f"services/{app}", "targetRevision": "main"},
                        "syncPolicy": {"automated": {"prune": True, "selfHeal": True}}},
               "status": {"sync": {"status": "Synced", "revision": b.uid().replace("-", "")[:40]},
                          "health": {"status": "Healthy"},
                          "operationState": {"phase": "Succeeded", "message": "successfully synced (all tasks run)",
                                             "startedAt": b.ago(hours=3), "finishedAt": b.ago(hours=3)},
                          "reconciledAt": b.ago(minutes=2)}})

    r = "argo-rollouts"
    b.deployment(r, "argo-rollouts", 2, {"app.kubernetes.io/name": "argo-rollouts", "app.kubernetes.io/instance": "argo-rollouts"},
                 "quay.io/argoproj/argo-rollouts:v1.8.3", [8090])
    b.deployment(r, "argo-rollouts-dashboard", 1, {"app.kubernetes.io/name": "argo-rollouts-dashboard"},
                 "quay.io/argoproj/kubectl-argo-rollouts:v1.8.3", [3100])
    b.deployment(r, "oauth2-proxy-rollouts", 1, {"app": "oauth2-proxy-rollouts", "app.kubernetes.io/name": "oauth2-proxy"},
                 "quay.io/oauth2-proxy/oauth2-proxy:v7.12.0", [4180], container="oauth2-proxy")
    b.service(r, "oauth2-proxy-rollouts", {"app": "oauth2-proxy-rollouts"}, [("http", 4180, 4180)])
    b.add({"apiVersion": CORE, "kind": "Secret", "type": "Opaque", "metadata": b.meta("oauth2-proxy-rollouts", r),
           "data": {"client-id": _b64("rollouts"), "client-secret": _b64(b.uid()), "cookie-secret": _b64(b.uid()[:32])}})
    b.gateway_route(r, "rollouts", "oauth2-proxy-rollouts", 4180)

    u = "uptime-kuma"
    b.deployment(u, "uptime-kuma", 1, _app("uptime-kuma"), "louislam/uptime-kuma:1.23.16", [3001])
    b.service(u, "uptime-kuma", {"app": "uptime-kuma"}, [("http", 3001, 3001)])
    b.pvc(u, "uptime-kuma", "2Gi", {"app": "uptime-kuma"})
    b.gateway_route(u, "status", "uptime-kuma", 3001)

    b.deployment("node-labeler", "node-labeler", 1, _app("node-labeler"),
                 f"harbor.{b.domain}/library/node-labeler:0.3.0", [8080], selector_pool=False)
    b.deployment("storage-autoscaler", "storage-autoscaler", 1, _app("storage-autoscaler"),
                 f"harbor.{b.domain}/library/storage-autoscaler:0.2.1", [8080], selector_pool=False)


def _filler(b: _Builder, size: int, total_nodes: int, pods: int | None, certificates: int | None,
            pvcs: int | None) -> None:
    """Plain team workloads that bring the world up to the requested totals."""
    if size == 1 and pods is None and certificates is None and pvcs is None and total_nodes == 6:
        return
    ns = FILLER_NAMESPACE
    _namespace(b, ns)
    want_pods = pods if pods is not None else 30 * total_nodes
    want_certs = certificates if certificates is not None else 3 * total_nodes
    want_pvcs = pvcs if pvcs is not None else total_nodes // 2
    have = b.store.count(CORE, "Pod")
    app = 0
    while have < want_pods:
        replicas = min(10, want_pods - have)
        pool = "compute" if app % 3 == 2 else "general"
        b.deployment(ns, f"app-{app:05d}", replicas, {"app": f"app-{app:05d}", "team": f"team-{app % 40:02d}"},
                     f"harbor.{b.domain}/apps/app-{app % 97}:1.{app % 7}.0", [8080], pool)
        have += replicas
        app += 1
    pki = b.vault.pki
    assert pki is not None
    leaf = pki.issue_leaf([f"apps.{b.domain}"], b.t0 - timedelta(days=5), b.t0 + timedelta(days=25))
    i = 0
    while b.store.count(CERT_MANAGER, "Certificate") < want_certs:
        b.certificate(ns, f"app-{i:05d}-{b.domain.replace('.', '-')}-tls", [f"app-{i:05d}.apps.{b.domain}"], leaf=leaf)
        i += 1
    i = 0
    while b.store.count(CORE, "PersistentVolumeClaim") < want_pvcs:
        b.pvc(ns, f"data-app-{i:05d}", "10Gi", {"app": f"app-{i:05d}"})
        i += 1
