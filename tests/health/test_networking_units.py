"""Chapter 3's arithmetic and matching, without a cluster: LB IPAM pool sizes and counts, label
selectors (no selector selects every node), interface regexes against the configured NICs, and
the kubelet-style pod state the SOPs quote."""

from __future__ import annotations

from handlers.networking import _count, _in_pool, _matches, _vm_nics_and_rules, pod_state, pool_size, selector_matches


def test_pool_size_counts_cidrs_and_ranges():
    pool = {"spec": {"blocks": [{"cidr": "203.0.113.200/29"}, {"start": "10.0.0.10", "stop": "10.0.0.19"},
                                {"start": "10.0.0.50"}, {"cidr": "not-a-cidr"}]}}
    assert pool_size(pool) == 8 + 10 + 1


def test_in_pool_for_cidr_and_range_blocks():
    pool = {"spec": {"blocks": [{"cidr": "203.0.113.200/29"}, {"start": "10.0.0.10", "stop": "10.0.0.19"}]}}
    assert _in_pool("203.0.113.207", pool) and not _in_pool("203.0.113.208", pool)
    assert _in_pool("10.0.0.19", pool) and not _in_pool("10.0.0.20", pool)
    assert not _in_pool("garbage", pool)


def test_lb_ipam_counts_are_read_from_condition_messages():
    pool = {"status": {"conditions": [{"type": "cilium.io/IPsAvailable", "status": "Unknown", "message": "0"},
                                      {"type": "cilium.io/IPsTotal", "status": "Unknown", "message": "8"}]}}
    assert _count(pool, "cilium.io/IPsAvailable") == 0 and _count(pool, "cilium.io/IPsTotal") == 8
    assert _count(pool, "cilium.io/IPsUsed") is None


def test_selectors():
    labels = {"workload-type": "general", "kubernetes.io/os": "linux"}
    assert selector_matches(None, labels) and selector_matches({}, labels)
    assert selector_matches({"matchLabels": {"workload-type": "general"}}, labels)
    assert not selector_matches({"matchLabels": {"node-role.kubernetes.io/lb": "true"}}, labels)
    assert selector_matches({"matchExpressions": [{"key": "workload-type", "operator": "In",
                                                   "values": ["general", "compute"]}]}, labels)
    assert not selector_matches({"matchExpressions": [{"key": "workload-type", "operator": "DoesNotExist"}]}, labels)


def test_interface_regexes():
    assert _matches("^eth[0-9]+", "eth0") and not _matches("^ens[0-9]+", "eth0")
    assert not _matches("([", "eth0")  # a broken regex matches nothing instead of crashing


def test_pod_state_as_kubectl_shows_it():
    crashing = {"status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "False"}],
                           "containerStatuses": [{"restartCount": 7, "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                                                  "lastState": {"terminated": {"exitCode": 1, "reason": "Error"}}}]}}
    assert pod_state(crashing) == (False, "CrashLoopBackOff", 7, "exit 1 Error")
    init = {"status": {"phase": "Pending", "conditions": [],
                       "initContainerStatuses": [{"restartCount": 2, "state": {"waiting": {"reason": "CrashLoopBackOff"}}}],
                       "containerStatuses": [{"restartCount": 0, "state": {"waiting": {"reason": "PodInitializing"}}}]}}
    assert pod_state(init)[:2] == (False, "Init:CrashLoopBackOff")
    ready = {"status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}],
                        "containerStatuses": [{"restartCount": 0, "state": {"running": {}}}]}}
    assert pod_state(ready) == (True, "Running", 0, "")


def test_a_vms_nics_and_whether_its_cloud_init_writes_policy_routing():
    def vm(user_data=None, secret=False, nics=2):
        cloud = {"userDataSecretRef": {"name": "ud"}} if secret else {"userData": user_data}
        return {"spec": {"template": {"spec": {"domain": {"devices": {"interfaces": [{"name": f"nic-{i}"}
                                                                                      for i in range(nics)]}},
                                               "volumes": [{"name": "cloudinitdisk", "cloudInitNoCloud": cloud}]}}}}
    rules = "#cloud-config\nruncmd:\n  - ip rule add from 10.1.0.0/24 table 100\n"
    assert _vm_nics_and_rules(vm(rules)) == (2, True)
    assert _vm_nics_and_rules(vm("#cloud-config\nruncmd:\n  - sysctl --system\n")) == (2, False)
    assert _vm_nics_and_rules(vm(secret=True)) == (2, None)
    assert _vm_nics_and_rules(vm("iptables -t mangle -A PREROUTING -i eth1 -j CONNMARK --set-mark 2", nics=1)) == (1, True)
