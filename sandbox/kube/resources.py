"""The sandbox API server's resource catalog: every kind it serves, as plain data.

Discovery, routing, Table output and error messages are all derived from this one list. Table
columns use either a JSONPath (as a CRD's ``additionalPrinterColumns`` does, copied from the
upstream CRDs) or ``@name``, a computed cell implemented in ``tables.py`` for the built-in kinds
whose real printers compute their cells (pod STATUS, node ROLES, ...).
"""

from __future__ import annotations

from dataclasses import dataclass, field

ALL_VERBS: tuple[str, ...] = ("create", "delete", "deletecollection", "get", "list", "patch",
                              "update", "watch")
READ_VERBS: tuple[str, ...] = ("get", "list", "watch")


@dataclass(frozen=True)
class Column:
    name: str
    source: str  # ".json.path" or "@computed_cell"
    type: str = "string"  # string | integer | number | boolean | date
    priority: int = 0  # >0: only shown by `-o wide`
    format: str = ""  # "name" for the NAME column
    description: str = ""


@dataclass(frozen=True)
class ScaleSpec:
    """Where a kind keeps what the autoscaling/v1 Scale subresource shows."""

    spec_replicas: str = "spec.replicas"
    status_replicas: str = "status.replicas"
    selector: str | None = "spec.selector"  # a LabelSelector object, or a string at that path


@dataclass(frozen=True)
class ResourceType:
    group: str
    version: str
    kind: str
    plural: str
    singular: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    verbs: tuple[str, ...] = ALL_VERBS
    status: bool = True  # has a /status subresource
    scale: ScaleSpec | None = None
    extra_subresources: tuple[str, ...] = ()  # "eviction", "log", "token"
    columns: tuple[Column, ...] = ()  # without NAME (always first) and AGE unless listed
    age_column: bool = True
    crd: bool = False  # CRD lists carry apiVersion/kind on each item; built-in lists do not

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def group_resource(self) -> str:
        """How errors name the resource: `pods`, `deployments.apps`."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"

    def subresources(self) -> tuple[str, ...]:
        subs: list[str] = []
        if self.status:
            subs.append("status")
        if self.scale:
            subs.append("scale")
        return (*subs, *self.extra_subresources)


def _c(name: str, source: str, type_: str = "string", priority: int = 0) -> Column:
    return Column(name=name, source=source, type=type_, priority=priority)


def _cond(t: str) -> str:
    return f'.status.conditions[?(@.type=="{t}")].status'


def _cond_msg(t: str) -> str:
    return f'.status.conditions[?(@.type=="{t}")].message'


_AGE = _c("Age", ".metadata.creationTimestamp", "date")
_WORKLOAD = ("all",)


def _core(kind: str, plural: str, namespaced: bool = True, short: tuple[str, ...] = (),
          columns: tuple[Column, ...] = (), **kw: object) -> ResourceType:
    return ResourceType(group="", version="v1", kind=kind, plural=plural, singular=kind.lower(),
                        namespaced=namespaced, short_names=short, columns=columns, **kw)  # type: ignore[arg-type]


def _builtin(group: str, version: str, kind: str, plural: str, namespaced: bool = True,
             short: tuple[str, ...] = (), columns: tuple[Column, ...] = (),
             **kw: object) -> ResourceType:
    return ResourceType(group=group, version=version, kind=kind, plural=plural,
                        singular=kind.lower(), namespaced=namespaced, short_names=short,
                        columns=columns, **kw)  # type: ignore[arg-type]


def _crd(group: str, version: str, kind: str, plural: str, namespaced: bool = True,
         short: tuple[str, ...] = (), columns: tuple[Column, ...] = (),
         categories: tuple[str, ...] = (), status: bool = True, age: bool = True,
         scale: ScaleSpec | None = None) -> ResourceType:
    return ResourceType(group=group, version=version, kind=kind, plural=plural,
                        singular=kind.lower(), namespaced=namespaced, short_names=short,
                        categories=categories, columns=columns, status=status, scale=scale,
                        age_column=age, crd=True)


RESOURCES: tuple[ResourceType, ...] = (
    # -- core/v1 -----------------------------------------------------------------------------
    _core("Namespace", "namespaces", False, ("ns",), (_c("Status", ".status.phase"),),
          verbs=("create", "delete", "get", "list", "patch", "update", "watch")),
    _core("Node", "nodes", False, ("no",), (
        _c("Status", "@node_status"), _c("Roles", "@node_roles"), _AGE,
        _c("Version", ".status.nodeInfo.kubeletVersion"),
        _c("Internal-IP", "@node_internal_ip", priority=1),
        _c("External-IP", "@node_external_ip", priority=1),
        _c("OS-Image", ".status.nodeInfo.osImage", priority=1),
        _c("Kernel-Version", ".status.nodeInfo.kernelVersion", priority=1),
        _c("Container-Runtime", ".status.nodeInfo.containerRuntimeVersion", priority=1),
    ), age_column=False),
    _core("Pod", "pods", True, ("po",), (
        _c("Ready", "@pod_ready"), _c("Status", "@pod_status"), _c("Restarts", "@pod_restarts"),
        _AGE, _c("IP", ".status.podIP", priority=1), _c("Node", ".spec.nodeName", priority=1),
        _c("Nominated Node", ".status.nominatedNodeName", priority=1),
        _c("Readiness Gates", "@pod_readiness_gates", priority=1),
    ), categories=_WORKLOAD, extra_subresources=("eviction", "log", "exec"), age_column=False),
    _core("Service", "services", True, ("svc",), (
        _c("Type", ".spec.type"), _c("Cluster-IP", ".spec.clusterIP"),
        _c("External-IP", "@svc_external_ip"), _c("Port(s)", "@svc_ports"), _AGE,
        _c("Selector", "@svc_selector", priority=1),
    ), categories=_WORKLOAD, age_column=False),
    _core("Endpoints", "endpoints", True, ("ep",), (_c("Endpoints", "@endpoints"),),
          status=False),
    _core("Event", "events", True, ("ev",), (
        _c("Last Seen", "@event_last_seen"), _c("Type", ".type"), _c("Reason", ".reason"),
        _c("Object", "@event_object"), _c("Message", ".message"),
    ), status=False, age_column=False),
    _core("ConfigMap", "configmaps", True, ("cm",), (_c("Data", "@data_count", "integer"),),
          status=False),
    _core("Secret", "secrets", True, (), (_c("Type", ".type"), _c("Data", "@data_count", "integer")),
          status=False),
    _core("PersistentVolumeClaim", "persistentvolumeclaims", True, ("pvc",), (
        _c("Status", "@terminating_or_phase"), _c("Volume", ".spec.volumeName"),
        _c("Capacity", ".status.capacity.storage"), _c("Access Modes", "@access_modes"),
        _c("StorageClass", ".spec.storageClassName"),
        _c("VolumeAttributesClass", ".spec.volumeAttributesClassName"), _AGE,
        _c("VolumeMode", ".spec.volumeMode", priority=1),
    ), age_column=False),
    _core("PersistentVolume", "persistentvolumes", False, ("pv",), (
        _c("Capacity", ".spec.capacity.storage"), _c("Access Modes", "@access_modes"),
        _c("Reclaim Policy", ".spec.persistentVolumeReclaimPolicy"),
        _c("Status", "@terminating_or_phase"), _c("Claim", "@pv_claim"),
        _c("StorageClass", ".spec.storageClassName"),
        _c("VolumeAttributesClass", ".spec.volumeAttributesClassName"),
        _c("Reason", ".status.reason"), _AGE,
    ), age_column=False),
    _core("ServiceAccount", "serviceaccounts", True, ("sa",),
          (_c("Secrets", "@secret_count", "integer"),), status=False,
          extra_subresources=("token",)),
    # -- apps/v1 -----------------------------------------------------------------------------
    _builtin("apps", "v1", "Deployment", "deployments", True, ("deploy",), (
        _c("Ready", "@ready_of_replicas"), _c("Up-to-date", ".status.updatedReplicas", "integer"),
        _c("Available", ".status.availableReplicas", "integer"), _AGE,
        _c("Containers", "@containers", priority=1), _c("Images", "@images", priority=1),
        _c("Selector", "@selector", priority=1),
    ), categories=_WORKLOAD, scale=ScaleSpec(), age_column=False),
    _builtin("apps", "v1", "StatefulSet", "statefulsets", True, ("sts",), (
        _c("Ready", "@ready_of_replicas"), _AGE,
        _c("Containers", "@containers", priority=1), _c("Images", "@images", priority=1),
    ), categories=_WORKLOAD, scale=ScaleSpec(), age_column=False),
    _builtin("apps", "v1", "DaemonSet", "daemonsets", True, ("ds",), (
        _c("Desired", ".status.desiredNumberScheduled", "integer"),
        _c("Current", ".status.currentNumberScheduled", "integer"),
        _c("Ready", ".status.numberReady", "integer"),
        _c("Up-to-date", ".status.updatedNumberScheduled", "integer"),
        _c("Available", ".status.numberAvailable", "integer"),
        _c("Node Selector", "@node_selector"), _AGE,
        _c("Containers", "@containers", priority=1), _c("Images", "@images", priority=1),
    ), categories=_WORKLOAD, age_column=False),
    _builtin("apps", "v1", "ReplicaSet", "replicasets", True, ("rs",), (
        _c("Desired", ".spec.replicas", "integer"), _c("Current", ".status.replicas", "integer"),
        _c("Ready", ".status.readyReplicas", "integer"), _AGE,
        _c("Containers", "@containers", priority=1), _c("Images", "@images", priority=1),
    ), categories=_WORKLOAD, scale=ScaleSpec(), age_column=False),
    # -- batch, policy, coordination, storage, autoscaling, networking ------------------------
    _builtin("batch", "v1", "Job", "jobs", True, (), (
        _c("Status", "@job_status"), _c("Completions", "@job_completions"),
        _c("Duration", "@job_duration"), _AGE,
    ), categories=_WORKLOAD, age_column=False),
    _builtin("batch", "v1", "CronJob", "cronjobs", True, ("cj",), (
        _c("Schedule", ".spec.schedule"), _c("Timezone", ".spec.timeZone"),
        _c("Suspend", ".spec.suspend", "boolean"), _c("Active", "@cronjob_active", "integer"),
        _c("Last Schedule", ".status.lastScheduleTime", "date"), _AGE,
    ), categories=_WORKLOAD, age_column=False),
    _builtin("policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets", True, ("pdb",), (
        _c("Min Available", "@pdb_min_available"), _c("Max Unavailable", "@pdb_max_unavailable"),
        _c("Allowed Disruptions", ".status.disruptionsAllowed", "integer"),
    )),
    _builtin("coordination.k8s.io", "v1", "Lease", "leases", True, (),
             (_c("Holder", ".spec.holderIdentity"),), status=False),
    _builtin("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices", True, (),
             (_c("AddressType", ".addressType"),), status=False),
    _builtin("storage.k8s.io", "v1", "StorageClass", "storageclasses", False, ("sc",), (
        _c("Provisioner", ".provisioner"), _c("ReclaimPolicy", ".reclaimPolicy"),
        _c("VolumeBindingMode", ".volumeBindingMode"),
        _c("AllowVolumeExpansion", ".allowVolumeExpansion", "boolean"),
    ), status=False),
    _builtin("storage.k8s.io", "v1", "VolumeAttachment", "volumeattachments", False, (), (
        _c("Attacher", ".spec.attacher"), _c("PV", ".spec.source.persistentVolumeName"),
        _c("Node", ".spec.nodeName"), _c("Attached", ".status.attached", "boolean"),
    )),
    _builtin("autoscaling", "v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers", True,
             ("hpa",), (
                 _c("Reference", "@hpa_reference"), _c("Targets", "@hpa_targets"),
                 _c("MinPods", ".spec.minReplicas", "integer"),
                 _c("MaxPods", ".spec.maxReplicas", "integer"),
                 _c("Replicas", ".status.currentReplicas", "integer"),
             ), categories=_WORKLOAD),
    # reviews: answered on create, never stored (`kubectl auth can-i`, `kubectl auth whoami`)
    ResourceType(group="authorization.k8s.io", version="v1", kind="SelfSubjectAccessReview",
                 plural="selfsubjectaccessreviews", singular="", namespaced=False,
                 verbs=("create",), status=False),
    ResourceType(group="authorization.k8s.io", version="v1", kind="SelfSubjectRulesReview",
                 plural="selfsubjectrulesreviews", singular="", namespaced=False,
                 verbs=("create",), status=False),
    ResourceType(group="authentication.k8s.io", version="v1", kind="SelfSubjectReview",
                 plural="selfsubjectreviews", singular="", namespaced=False,
                 verbs=("create",), status=False),
    # metrics-server: what `kubectl top` reads; scenarios write NodeMetrics/PodMetrics objects
    ResourceType(group="metrics.k8s.io", version="v1beta1", kind="NodeMetrics", plural="nodes",
                 singular="", namespaced=False, verbs=("get", "list"), status=False,
                 columns=(_c("CPU", ".usage.cpu"), _c("Memory", ".usage.memory"),
                          _c("Window", ".window"))),
    ResourceType(group="metrics.k8s.io", version="v1beta1", kind="PodMetrics", plural="pods",
                 singular="", namespaced=True, verbs=("get", "list"), status=False,
                 columns=(_c("Window", ".window"),)),
    _builtin("networking.k8s.io", "v1", "Ingress", "ingresses", True, ("ing",), (
        _c("Class", ".spec.ingressClassName"), _c("Hosts", ".spec.rules[*].host"),
        _c("Address", ".status.loadBalancer.ingress[*].ip"), _c("Ports", "@ingress_ports"),
    )),
    _builtin("networking.k8s.io", "v1", "NetworkPolicy", "networkpolicies", True, ("netpol",),
             (_c("Pod-Selector", "@netpol_selector"),), status=False),
    # -- cert-manager ------------------------------------------------------------------------
    _crd("cert-manager.io", "v1", "Certificate", "certificates", True, ("cert", "certs"), (
        _c("Ready", _cond("Ready")), _c("Secret", ".spec.secretName"),
        _c("Issuer", ".spec.issuerRef.name", priority=1),
        _c("Status", _cond_msg("Ready"), priority=1),
    ), categories=("cert-manager",)),
    _crd("cert-manager.io", "v1", "CertificateRequest", "certificaterequests", True,
         ("cr", "crs"), (
             _c("Approved", _cond("Approved")), _c("Denied", _cond("Denied")),
             _c("Ready", _cond("Ready")), _c("Issuer", ".spec.issuerRef.name"),
             _c("Requester", ".spec.username"), _c("Status", _cond_msg("Ready"), priority=1),
         ), categories=("cert-manager",)),
    _crd("cert-manager.io", "v1", "Issuer", "issuers", True, (), (
        _c("Ready", _cond("Ready")), _c("Status", _cond_msg("Ready"), priority=1),
    ), categories=("cert-manager",)),
    _crd("cert-manager.io", "v1", "ClusterIssuer", "clusterissuers", False, (), (
        _c("Ready", _cond("Ready")), _c("Status", _cond_msg("Ready"), priority=1),
    ), categories=("cert-manager",)),
    _crd("acme.cert-manager.io", "v1", "Order", "orders", True, (), (
        _c("State", ".status.state"), _c("Issuer", ".spec.issuerRef.name", priority=1),
        _c("Reason", ".status.reason", priority=1),
    ), categories=("cert-manager", "cert-manager-acme")),
    _crd("acme.cert-manager.io", "v1", "Challenge", "challenges", True, (), (
        _c("State", ".status.state"), _c("Domain", ".spec.dnsName"),
        _c("Reason", ".status.reason", priority=1),
    ), categories=("cert-manager", "cert-manager-acme")),
    # -- CloudNativePG (AGE comes first in its CRDs) -----------------------------------------
    _crd("postgresql.cnpg.io", "v1", "Cluster", "clusters", True, (), (
        _AGE, _c("Instances", ".status.instances", "integer"),
        _c("Ready", ".status.readyInstances", "integer"), _c("Status", ".status.phase"),
        _c("Primary", ".status.currentPrimary"),
    ), age=False, scale=ScaleSpec("spec.instances", "status.instances", "status.selector")),
    _crd("postgresql.cnpg.io", "v1", "Backup", "backups", True, (), (
        _AGE, _c("Cluster", ".spec.cluster.name"), _c("Method", ".spec.method"),
        _c("Phase", ".status.phase"), _c("Error", ".status.error"),
    ), age=False),
    _crd("postgresql.cnpg.io", "v1", "ScheduledBackup", "scheduledbackups", True, (), (
        _AGE, _c("Cluster", ".spec.cluster.name"),
        _c("Last Backup", ".status.lastScheduleTime", "date"),
    ), age=False),
    _crd("postgresql.cnpg.io", "v1", "Pooler", "poolers", True, (), (
        _AGE, _c("Cluster", ".spec.cluster.name"), _c("Type", ".spec.type"),
    ), age=False, scale=ScaleSpec("spec.instances", "status.instances", None)),
    # -- mariadb-operator (LibreNMS's Galera, runbook 6.4) ---------------------------------------
    _crd("k8s.mariadb.com", "v1alpha1", "MariaDB", "mariadbs", True, ("mdb",), (
        _c("Ready", _cond("Ready")), _c("Status", _cond_msg("Ready")),
        _c("Primary", ".status.currentPrimary"),
    )),
    # -- Gateway API -------------------------------------------------------------------------
    _crd("gateway.networking.k8s.io", "v1", "Gateway", "gateways", True, ("gtw",), (
        _c("Class", ".spec.gatewayClassName"), _c("Address", ".status.addresses[*].value"),
        _c("Programmed", _cond("Programmed")),
    ), categories=("gateway-api",)),
    _crd("gateway.networking.k8s.io", "v1", "HTTPRoute", "httproutes", True, (), (
        _c("Hostnames", ".spec.hostnames"),
    ), categories=("gateway-api",)),
    _crd("gateway.networking.k8s.io", "v1", "GatewayClass", "gatewayclasses", False, ("gc",), (
        _c("Controller", ".spec.controllerName"), _c("Accepted", _cond("Accepted")), _AGE,
        _c("Description", ".spec.description", priority=1),
    ), categories=("gateway-api",), age=False),
    # -- Traefik -----------------------------------------------------------------------------
    _crd("traefik.io", "v1alpha1", "IngressRoute", "ingressroutes", status=False),
    _crd("traefik.io", "v1alpha1", "IngressRouteTCP", "ingressroutetcps", status=False),
    _crd("traefik.io", "v1alpha1", "Middleware", "middlewares", status=False),
    _crd("traefik.io", "v1alpha1", "TLSStore", "tlsstores", status=False),
    _crd("traefik.io", "v1alpha1", "TLSOption", "tlsoptions", status=False),
    _crd("traefik.io", "v1alpha1", "ServersTransport", "serverstransports", status=False),
    # -- Cilium: LB IPAM and L2 announcements are v2alpha1 (as the runbook applies them) ------
    _crd("cilium.io", "v2", "CiliumNetworkPolicy", "ciliumnetworkpolicies", True, ("cnp",), (
        _AGE, _c("Valid", _cond("Valid")),
    ), categories=("cilium", "ciliumpolicy"), age=False),
    _crd("cilium.io", "v2", "CiliumClusterwideNetworkPolicy", "ciliumclusterwidenetworkpolicies",
         False, ("ccnp",), (_AGE, _c("Valid", _cond("Valid"))),
         categories=("cilium", "ciliumpolicy"), age=False),
    _crd("cilium.io", "v2", "CiliumNode", "ciliumnodes", False, ("cn",),
         (_c("CiliumInternalIP", '.spec.addresses[?(@.type=="CiliumInternalIP")].ip'),
          _c("InternalIP", '.spec.addresses[?(@.type=="InternalIP")].ip'),),
         categories=("cilium",), status=False),
    _crd("cilium.io", "v2", "CiliumEndpoint", "ciliumendpoints", True, ("cep",), (
        _c("Security Identity", ".status.identity.id", "integer"),
        _c("Endpoint State", ".status.state"),
        _c("IPv4", ".status.networking.addressing[0].ipv4"),
    ), categories=("cilium",), status=False, age=False),
    _crd("cilium.io", "v2alpha1", "CiliumL2AnnouncementPolicy", "ciliuml2announcementpolicies",
         False, ("l2announcement",), categories=("cilium",)),
    _crd("cilium.io", "v2alpha1", "CiliumLoadBalancerIPPool", "ciliumloadbalancerippools", False,
         ("ippools", "ippool", "lbippool", "lbippools"), (
             _c("Disabled", ".spec.disabled", "boolean"),
             _c("Conflicting", _cond("cilium.io/PoolConflict")),
             _c("IPs Available", '.status.conditions[?(@.type=="cilium.io/IPsAvailable")].message'),
         ), categories=("cilium",)),
    # -- Argo CD / Argo Rollouts -------------------------------------------------------------
    _crd("argoproj.io", "v1alpha1", "Application", "applications", True, ("app", "apps"), (
        _c("Sync Status", ".status.sync.status"), _c("Health Status", ".status.health.status"),
        _c("Revision", ".status.sync.revision", priority=10),
        _c("Project", ".spec.project", priority=10),
    ), status=False, age=False),
    _crd("argoproj.io", "v1alpha1", "AppProject", "appprojects", True, ("appproj", "appprojs"),
         status=False),
    _crd("argoproj.io", "v1alpha1", "Rollout", "rollouts", True, ("ro",), (
        _c("Desired", ".spec.replicas", "integer"), _c("Current", ".status.replicas", "integer"),
        _c("Up-to-date", ".status.updatedReplicas", "integer"),
        _c("Available", ".status.availableReplicas", "integer"),
    ), scale=ScaleSpec("spec.replicas", "status.HPAReplicas", "status.selector")),
    _crd("argoproj.io", "v1alpha1", "AnalysisRun", "analysisruns", True, ("ar",),
         (_c("Status", ".status.phase"),)),
    _crd("argoproj.io", "v1alpha1", "AnalysisTemplate", "analysistemplates", True, ("at",),
         status=False),
    _crd("argoproj.io", "v1alpha1", "ClusterAnalysisTemplate", "clusteranalysistemplates", False,
         ("cat",), status=False),
    # -- Cluster API machines (Rancher) and Rancher provisioning clusters --------------------
    _crd("cluster.x-k8s.io", "v1beta1", "Machine", "machines", True, ("ma",), (
        _c("Cluster", ".spec.clusterName"), _c("NodeName", ".status.nodeRef.name"),
        _c("ProviderID", ".spec.providerID"), _c("Phase", ".status.phase"), _AGE,
        _c("Version", ".spec.version"),
    ), categories=("cluster-api",), age=False),
    _crd("cluster.x-k8s.io", "v1beta1", "MachineDeployment", "machinedeployments", True, ("md",), (
        _c("Cluster", ".spec.clusterName"), _c("Replicas", ".status.replicas", "integer"),
        _c("Ready", ".status.readyReplicas", "integer"), _c("Phase", ".status.phase"), _AGE,
    ), categories=("cluster-api",), age=False,
         scale=ScaleSpec("spec.replicas", "status.replicas", "status.selector")),
    _crd("provisioning.cattle.io", "v1", "Cluster", "clusters", True, (), (
        _c("Ready", ".status.ready"), _c("Kubeconfig", ".status.clientSecretName"),
    ), age=False),
    _crd("helm.cattle.io", "v1", "HelmChart", "helmcharts", True, (), (
        _c("Job", ".status.jobName"), _c("Chart", ".spec.chart"),
        _c("TargetNamespace", ".spec.targetNamespace"), _c("Version", ".spec.version"),
    ), age=False),
    _crd("helm.cattle.io", "v1", "HelmChartConfig", "helmchartconfigs", status=False),
    # RKE2's record of each etcd snapshot file (k3s pkg/apis/k3s.cattle.io/v1): cluster-scoped.
    _crd("k3s.cattle.io", "v1", "ETCDSnapshotFile", "etcdsnapshotfiles", False, (), (
        _c("SnapshotName", ".spec.snapshotName"), _c("Node", ".spec.nodeName"),
        _c("Location", ".spec.location"), _c("Size", ".status.size"),
        _c("CreationTime", ".status.creationTime"),
    )),
    # -- Prometheus operator -----------------------------------------------------------------
    _crd("monitoring.coreos.com", "v1", "PrometheusRule", "prometheusrules", True, ("promrule",),
         categories=("prometheus-operator",), status=False),
    _crd("monitoring.coreos.com", "v1", "ServiceMonitor", "servicemonitors", True, ("smon",),
         categories=("prometheus-operator",), status=False),
    _crd("monitoring.coreos.com", "v1", "PodMonitor", "podmonitors", True, ("pmon",),
         categories=("prometheus-operator",), status=False),
    _crd("monitoring.coreos.com", "v1", "Prometheus", "prometheuses", True, ("prom",), (
        _c("Version", ".spec.version"), _c("Desired", ".spec.replicas", "integer"),
        _c("Ready", ".status.availableReplicas", "integer"),
        _c("Reconciled", _cond("Reconciled")), _c("Available", _cond("Available")),
    ), categories=("prometheus-operator",)),
    _crd("monitoring.coreos.com", "v1", "Alertmanager", "alertmanagers", True, ("am",), (
        _c("Version", ".spec.version"), _c("Replicas", ".spec.replicas", "integer"),
        _c("Ready", ".status.availableReplicas", "integer"),
        _c("Reconciled", _cond("Reconciled")), _c("Available", _cond("Available")),
    ), categories=("prometheus-operator",)),
    _crd("monitoring.coreos.com", "v1alpha1", "AlertmanagerConfig", "alertmanagerconfigs", True,
         ("amcfg",), categories=("prometheus-operator",), status=False),
    # -- Harvester (KubeVirt, CDI, Longhorn) and the runbook's database operators -------------
    _crd("kubevirt.io", "v1", "VirtualMachine", "virtualmachines", True, ("vm", "vms"), (
        _AGE, _c("Status", ".status.printableStatus"), _c("Ready", _cond("Ready")),
    ), categories=("all",), age=False),
    _crd("kubevirt.io", "v1", "VirtualMachineInstance", "virtualmachineinstances", True,
         ("vmi", "vmis"), (
             _AGE, _c("Phase", ".status.phase"), _c("IP", ".status.interfaces[0].ipAddress"),
             _c("NodeName", ".status.nodeName"), _c("Ready", _cond("Ready")),
         ), categories=("all",), age=False),
    _crd("cdi.kubevirt.io", "v1beta1", "DataVolume", "datavolumes", True, ("dv", "dvs"), (
        _c("Phase", ".status.phase"), _c("Progress", ".status.progress"),
        _c("Restarts", ".status.restartCount", "integer"),
    ), categories=("all",)),
    _crd("longhorn.io", "v1beta2", "Volume", "volumes", True, ("lhv",), (
        _c("State", ".status.state"), _c("Robustness", ".status.robustness"),
        _c("Size", ".spec.size"), _c("Node", ".status.currentNodeID"),
    ), categories=("longhorn",)),
    _crd("longhorn.io", "v1beta2", "Replica", "replicas", True, ("lhr",), (
        _c("State", ".status.currentState"), _c("Node", ".spec.nodeID"),
    ), categories=("longhorn",)),
    _crd("k8s.mariadb.com", "v1alpha1", "MariaDB", "mariadbs", True, ("mdb",), (
        _c("Ready", _cond("Ready")), _c("Status", _cond_msg("Ready")),
        _c("Primary", ".status.currentPrimary"),
    )),
    _crd("redis.redis.opstreelabs.in", "v1beta2", "RedisSentinel", "redissentinels", True, (), (
        _c("ClusterSize", ".spec.clusterSize", "integer"),
    )),
    _crd("redis.redis.opstreelabs.in", "v1beta2", "RedisReplication", "redisreplications", True,
         (), (_c("ClusterSize", ".spec.clusterSize", "integer"), _c("Master", ".status.masterNode"))),
)


@dataclass
class Catalog:
    """Lookups over RESOURCES, built once."""

    resources: tuple[ResourceType, ...] = RESOURCES
    by_path: dict[tuple[str, str, str], ResourceType] = field(default_factory=dict)
    by_kind: dict[tuple[str, str], ResourceType] = field(default_factory=dict)
    groups: dict[str, list[str]] = field(default_factory=dict)  # group -> versions, preferred first

    def __post_init__(self) -> None:
        for rt in self.resources:
            self.by_path[(rt.group, rt.version, rt.plural)] = rt
            self.by_kind[(rt.api_version, rt.kind)] = rt
            versions = self.groups.setdefault(rt.group, [])
            if rt.version not in versions:
                versions.append(rt.version)

    def lookup(self, group: str, version: str, plural: str) -> ResourceType | None:
        return self.by_path.get((group, version, plural))

    def for_kind(self, api_version: str, kind: str) -> ResourceType | None:
        return self.by_kind.get((api_version, kind))

    def in_group_version(self, group: str, version: str) -> list[ResourceType]:
        return [rt for rt in self.resources if rt.group == group and rt.version == version]


CATALOG = Catalog()
