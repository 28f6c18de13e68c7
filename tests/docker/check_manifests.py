#!/usr/bin/env python3
"""Static checks of docker/compose.yaml and docker/kubernetes.yaml (no engine, no cluster).

    /usr/bin/python3 tests/docker/check_manifests.py      # exit 0 when both are clean

Both must parse as YAML and use only known keys: a small schema below lists the
Compose keys and the fields of the apps/v1 and v1 kinds we use (a field that is
valid but not listed is reported too: add it here). Beyond the names it checks
what would silently break: selectors that match the pod labels, the mounted
ConfigMap and named ports that exist, the stop budget (preStop sleep +
timeouts.shutdown_grace < terminationGracePeriodSeconds, stop_grace_period >
shutdown_grace), the compose config bind mount and the fixed address the
terminate route's bridge needs. `make docker-test` runs it first
(tests/docker/run.py); it needs only python3-yaml.
"""
import os
import re
import sys

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DOCKER = os.path.join(ROOT, "docker")

# ---- a tiny schema language: a dict is an object with exactly these fields, [T] a
# list of T, a str names another entry of the table (or a scalar kind below).
SCALARS = {
    "str": lambda v: isinstance(v, str),
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "bool": lambda v: isinstance(v, bool),
    "intstr": lambda v: isinstance(v, str) or (isinstance(v, int) and not isinstance(v, bool)),
    "quantity": lambda v: isinstance(v, (str, int)) and not isinstance(v, bool),
    "strmap": lambda v: isinstance(v, dict) and all(
        isinstance(k, str) and isinstance(x, str) for k, x in v.items()),
    "duration": lambda v: isinstance(v, str) and re.fullmatch(r"(\d+(\.\d+)?(us|ms|s|m|h))+", v),
    "any": lambda v: True,
}

K8S = {
    "ObjectMeta": {"name": "str", "namespace": "str", "labels": "strmap",
                   "annotations": "strmap"},
    "ConfigMap": {"apiVersion": "str", "kind": "str", "metadata": "ObjectMeta",
                  "data": "strmap", "binaryData": "strmap", "immutable": "bool"},
    "Deployment": {"apiVersion": "str", "kind": "str", "metadata": "ObjectMeta",
                   "spec": "DeploymentSpec"},
    "DeploymentSpec": {"replicas": "int", "selector": "LabelSelector",
                       "template": "PodTemplateSpec", "strategy": "DeploymentStrategy",
                       "minReadySeconds": "int", "revisionHistoryLimit": "int",
                       "progressDeadlineSeconds": "int", "paused": "bool"},
    "LabelSelector": {"matchLabels": "strmap", "matchExpressions": ["any"]},
    "DeploymentStrategy": {"type": "str", "rollingUpdate": "RollingUpdateDeployment"},
    "RollingUpdateDeployment": {"maxSurge": "intstr", "maxUnavailable": "intstr"},
    "PodTemplateSpec": {"metadata": "ObjectMeta", "spec": "PodSpec"},
    "PodSpec": {"containers": ["Container"], "initContainers": ["Container"],
                "volumes": ["Volume"], "terminationGracePeriodSeconds": "int",
                "securityContext": "PodSecurityContext", "serviceAccountName": "str",
                "automountServiceAccountToken": "bool", "nodeSelector": "strmap",
                "affinity": "any", "tolerations": ["any"],
                "topologySpreadConstraints": ["any"], "priorityClassName": "str",
                "restartPolicy": "str", "dnsPolicy": "str", "enableServiceLinks": "bool",
                "shareProcessNamespace": "bool", "hostNetwork": "bool"},
    "PodSecurityContext": {"runAsNonRoot": "bool", "runAsUser": "int", "runAsGroup": "int",
                           "fsGroup": "int", "seccompProfile": "SeccompProfile",
                           "sysctls": ["any"], "supplementalGroups": ["int"]},
    "SeccompProfile": {"type": "str", "localhostProfile": "str"},
    "Container": {"name": "str", "image": "str", "imagePullPolicy": "str",
                  "command": ["str"], "args": ["str"], "workingDir": "str",
                  "env": ["EnvVar"], "envFrom": ["any"], "ports": ["ContainerPort"],
                  "readinessProbe": "Probe", "livenessProbe": "Probe", "startupProbe": "Probe",
                  "lifecycle": "Lifecycle", "resources": "ResourceRequirements",
                  "securityContext": "SecurityContext", "volumeMounts": ["VolumeMount"],
                  "terminationMessagePolicy": "str", "stdin": "bool", "tty": "bool"},
    "EnvVar": {"name": "str", "value": "str", "valueFrom": "any"},
    "ContainerPort": {"name": "str", "containerPort": "int", "protocol": "str",
                      "hostPort": "int", "hostIP": "str"},
    "Probe": {"httpGet": "HTTPGetAction", "tcpSocket": "TCPSocketAction",
              "exec": "ExecAction", "grpc": "any", "initialDelaySeconds": "int",
              "periodSeconds": "int", "timeoutSeconds": "int", "successThreshold": "int",
              "failureThreshold": "int", "terminationGracePeriodSeconds": "int"},
    "HTTPGetAction": {"path": "str", "port": "intstr", "host": "str", "scheme": "str",
                      "httpHeaders": ["any"]},
    "TCPSocketAction": {"port": "intstr", "host": "str"},
    "ExecAction": {"command": ["str"]},
    "Lifecycle": {"preStop": "LifecycleHandler", "postStart": "LifecycleHandler"},
    "LifecycleHandler": {"exec": "ExecAction", "httpGet": "HTTPGetAction",
                         "tcpSocket": "TCPSocketAction", "sleep": "SleepAction"},
    "SleepAction": {"seconds": "int"},
    "ResourceRequirements": {"requests": "ResourceList", "limits": "ResourceList"},
    "ResourceList": {"cpu": "quantity", "memory": "quantity", "ephemeral-storage": "quantity"},
    "SecurityContext": {"allowPrivilegeEscalation": "bool", "readOnlyRootFilesystem": "bool",
                        "runAsNonRoot": "bool", "runAsUser": "int", "runAsGroup": "int",
                        "privileged": "bool", "capabilities": "Capabilities",
                        "seccompProfile": "SeccompProfile"},
    "Capabilities": {"add": ["str"], "drop": ["str"]},
    "VolumeMount": {"name": "str", "mountPath": "str", "readOnly": "bool", "subPath": "str"},
    "Volume": {"name": "str", "configMap": "ConfigMapVolumeSource", "secret": "any",
               "emptyDir": "any"},
    "ConfigMapVolumeSource": {"name": "str", "items": ["any"], "defaultMode": "int",
                              "optional": "bool"},
    "Service": {"apiVersion": "str", "kind": "str", "metadata": "ObjectMeta",
                "spec": "ServiceSpec"},
    "ServiceSpec": {"type": "str", "selector": "strmap", "ports": ["ServicePort"],
                    "clusterIP": "str", "sessionAffinity": "str",
                    "externalTrafficPolicy": "str", "internalTrafficPolicy": "str",
                    "publishNotReadyAddresses": "bool"},
    "ServicePort": {"name": "str", "port": "int", "targetPort": "intstr", "protocol": "str",
                    "nodePort": "int", "appProtocol": "str"},
}
K8S_KINDS = {"ConfigMap": "v1", "Service": "v1", "Deployment": "apps/v1"}
K8S_REQUIRED = {"DeploymentSpec": ["selector", "template"],
                "Container": ["name", "image"], "ContainerPort": ["containerPort"],
                "ServicePort": ["port"], "VolumeMount": ["name", "mountPath"],
                "Volume": ["name"], "EnvVar": ["name"]}

COMPOSE = {
    "Top": {"name": "str", "services": {"*": "Service"}, "networks": {"*": "Network"},
            "volumes": "any", "configs": "any", "secrets": "any"},
    "Service": {"build": "Build", "image": "str", "command": ["str"], "entrypoint": ["str"],
                "environment": "any", "env_file": "any", "ports": ["str"], "expose": ["any"],
                "volumes": ["str"], "networks": "ServiceNetworks", "depends_on": "any",
                "healthcheck": "Healthcheck", "restart": "str", "stop_signal": "str",
                "stop_grace_period": "duration", "init": "bool", "user": "str",
                "read_only": "bool", "ulimits": "Ulimits", "cap_drop": ["str"],
                "cap_add": ["str"], "security_opt": ["str"], "logging": "any",
                "labels": "any", "container_name": "str", "hostname": "str", "tmpfs": "any",
                "pull_policy": "str", "profiles": ["str"], "deploy": "any"},
    "Build": {"context": "str", "dockerfile": "str", "args": "any", "target": "str"},
    "ServiceNetworks": "any",  # a list of names or {name: {ipv4_address, aliases}}, below
    "ServiceNetwork": {"ipv4_address": "str", "ipv6_address": "str", "aliases": ["str"]},
    "Healthcheck": {"test": "any", "interval": "duration", "timeout": "duration",
                    "retries": "int", "start_period": "duration", "disable": "bool"},
    "Ulimits": {"*": "Ulimit"},
    "Ulimit": {"soft": "int", "hard": "int"},
    "Network": {"driver": "str", "ipam": "Ipam", "external": "bool", "internal": "bool",
                "name": "str", "enable_ipv6": "bool"},
    "Ipam": {"driver": "str", "config": ["IpamConfig"]},
    "IpamConfig": {"subnet": "str", "gateway": "str", "ip_range": "str"},
}


def validate(value, spec, table, where, errors, required=None):
    """Appends 'where: problem' to errors for every field not in spec or of the wrong type."""
    if isinstance(spec, list):
        if not isinstance(value, list):
            errors.append(f"{where}: expected a list")
            return
        for i, item in enumerate(value):
            validate(item, spec[0], table, f"{where}[{i}]", errors, required)
        return
    if isinstance(spec, str) and spec in SCALARS:
        if not SCALARS[spec](value):
            errors.append(f"{where}: {value!r} is not a {spec}")
        return
    name = spec if isinstance(spec, str) else None
    fields = table[spec] if isinstance(spec, str) else spec
    if fields == "any":
        return
    if not isinstance(value, dict):
        errors.append(f"{where}: expected a mapping ({name or 'object'})")
        return
    for key, sub in value.items():
        if "*" in fields:
            validate(sub, fields["*"], table, f"{where}.{key}", errors, required)
        elif isinstance(key, str) and key.startswith("x-") and table is COMPOSE:
            continue  # Compose extension fields
        elif key not in fields:
            errors.append(f"{where}: unknown field {key!r}"
                          f"{' of ' + name if name else ''} (not in this test's schema)")
        else:
            validate(sub, fields[key], table, f"{where}.{key}", errors, required)
    for key in (required or {}).get(name, []):
        if key not in value:
            errors.append(f"{where}: {name} needs {key!r}")


def seconds(text):
    """libconfig/compose duration text -> seconds (ms, s, m, h; a bare number is seconds)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*", text)
    if not m:
        raise ValueError(f"bad duration {text!r}")
    return float(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, None: 1}[m.group(2)]


def conf_value(conf_text, key):
    m = re.search(r"\b" + key + r'\s*=\s*"([^"]*)"', conf_text)
    return m.group(1) if m else None


def check_kubernetes(path=os.path.join(DOCKER, "kubernetes.yaml")):
    errors = []
    try:
        docs = [d for d in yaml.safe_load_all(open(path)) if d is not None]
    except yaml.YAMLError as e:
        return [f"{path}: not YAML: {e}"]
    by_kind = {}
    for i, doc in enumerate(docs):
        kind = doc.get("kind") if isinstance(doc, dict) else None
        where = f"kubernetes.yaml document {i + 1} ({kind})"
        if kind not in K8S_KINDS:
            errors.append(f"{where}: kind {kind!r} not one of {sorted(K8S_KINDS)}")
            continue
        if doc.get("apiVersion") != K8S_KINDS[kind]:
            errors.append(f"{where}: apiVersion {doc.get('apiVersion')!r}, "
                          f"expected {K8S_KINDS[kind]!r}")
        validate(doc, kind, K8S, where, errors, K8S_REQUIRED)
        if not (doc.get("metadata") or {}).get("name"):
            errors.append(f"{where}: metadata.name is required")
        by_kind.setdefault(kind, []).append(doc)
    for kind in K8S_KINDS:
        if len(by_kind.get(kind, [])) != 1:
            errors.append(f"kubernetes.yaml: expected one {kind}, found "
                          f"{len(by_kind.get(kind, []))}")
    if errors:
        return errors
    cm, dep, svc = by_kind["ConfigMap"][0], by_kind["Deployment"][0], by_kind["Service"][0]
    spec = dep["spec"]
    pod = spec["template"]["spec"]
    labels = spec["template"].get("metadata", {}).get("labels", {})
    if spec.get("replicas") != 2:
        errors.append(f"Deployment: replicas {spec.get('replicas')}, expected 2")
    for what, sel in (("Deployment selector", spec["selector"].get("matchLabels", {})),
                      ("Service selector", svc["spec"].get("selector", {}))):
        if not sel or any(labels.get(k) != v for k, v in sel.items()):
            errors.append(f"{what} {sel} does not match the pod labels {labels}")
    conf = cm.get("data", {}).get("switchyard.conf")
    if not conf:
        errors.append("ConfigMap: no data key switchyard.conf")
        return errors
    grace = seconds(conf_value(conf, "shutdown_grace") or "10s")
    c = next((c for c in pod["containers"] if c["name"] == "switchyard"), None)
    if c is None:
        return errors + ["Deployment: no container named switchyard"]
    ports = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
    if ports.get("http") != 8080 or ports.get("admin") != 9901:
        errors.append(f"Deployment: container ports {ports}, expected http 8080, admin 9901")
    rp = c.get("readinessProbe", {}).get("httpGet", {})
    if rp.get("path") != "/healthz" or ports.get(rp.get("port"), rp.get("port")) != 9901:
        errors.append(f"readinessProbe: {rp}, expected httpGet /healthz on 9901")
    pre = c.get("lifecycle", {}).get("preStop", {})
    cmd = pre.get("exec", {}).get("command", [])
    if pre.get("sleep"):
        pre_sleep = pre["sleep"]["seconds"]
    elif len(cmd) == 2 and cmd[0].endswith("sleep"):
        pre_sleep = float(cmd[1])
    else:
        pre_sleep = None
        errors.append(f"preStop: {pre}, expected a sleep")
    tgp = pod.get("terminationGracePeriodSeconds", 30)
    if pre_sleep is not None and not pre_sleep + grace < tgp:
        errors.append(f"terminationGracePeriodSeconds {tgp} <= preStop {pre_sleep} s + "
                      f"shutdown_grace {grace} s")
    mounts = {m["name"]: m for m in c.get("volumeMounts", [])}
    vols = {v["name"]: v for v in pod.get("volumes", [])}
    args = c.get("args", [])
    conf_path = args[args.index("-c") + 1] if "-c" in args[:-1] else "/etc/switchyard/switchyard.conf"
    ok = False
    for name, m in mounts.items():
        v = vols.get(name)
        if v is None:
            errors.append(f"volumeMount {name}: no such volume")
        elif v.get("configMap", {}).get("name") == cm["metadata"]["name"]:
            if "subPath" in m:
                errors.append(f"volumeMount {name}: subPath mounts never see ConfigMap updates")
            ok = ok or conf_path == m["mountPath"].rstrip("/") + "/switchyard.conf"
    if not ok:
        errors.append(f"the ConfigMap is not mounted where args read it ({conf_path})")
    for p in svc["spec"]["ports"]:
        t = p.get("targetPort", p["port"])
        if isinstance(t, str) and t not in ports:
            errors.append(f"Service port {p.get('name')}: targetPort {t!r} is not a container port")
    return errors


def check_compose(path=os.path.join(DOCKER, "compose.yaml")):
    errors = []
    try:
        doc = yaml.safe_load(open(path))
    except yaml.YAMLError as e:
        return [f"{path}: not YAML: {e}"]
    if not isinstance(doc, dict) or "services" not in doc:
        return [f"{path}: no services"]
    validate(doc, "Top", COMPOSE, "compose.yaml", errors)
    networks = set((doc.get("networks") or {}).keys())
    services = doc["services"]
    for name, svc in services.items():
        nets = svc.get("networks", [])
        if isinstance(nets, dict):
            for n, v in nets.items():
                validate(v or {}, "ServiceNetwork", COMPOSE,
                         f"compose.yaml.services.{name}.networks.{n}", errors)
        for n in nets:
            if n not in networks:
                errors.append(f"service {name}: network {n!r} is not defined")
        deps = svc.get("depends_on", [])
        for d in deps:
            if d not in services:
                errors.append(f"service {name}: depends_on {d!r}, no such service")
        b = svc.get("build")
        if b:
            ctx = os.path.normpath(os.path.join(DOCKER, b.get("context", ".")))
            df = os.path.join(ctx, b.get("dockerfile", "Dockerfile"))
            if not os.path.isfile(df):
                errors.append(f"service {name}: build file {df} does not exist")
        for v in svc.get("volumes", []):
            src = v.split(":")[0]
            if src.startswith(".") and not os.path.exists(os.path.join(DOCKER, src)):
                errors.append(f"service {name}: volume source {src} does not exist")
    for need in ("switchyard", "app1", "app2", "tcp-echo"):
        if need not in services:
            errors.append(f"compose.yaml: no service {need!r}")
    if errors:
        return errors
    sy = services["switchyard"]
    mount = next((v for v in sy.get("volumes", []) if ":/etc/switchyard" in v), None)
    if mount is None:
        return errors + ["switchyard: no config mounted at /etc/switchyard"]
    conf_file = os.path.join(DOCKER, mount.split(":")[0], "switchyard.conf")
    if not os.path.isfile(conf_file):
        return errors + [f"switchyard: {conf_file} does not exist"]
    conf = open(conf_file).read()
    grace = seconds(conf_value(conf, "shutdown_grace") or "10s")
    if seconds(sy.get("stop_grace_period", "10s")) <= grace:
        errors.append(f"switchyard: stop_grace_period {sy.get('stop_grace_period', '10s')} "
                      f"<= shutdown_grace {grace} s")
    for host in ("app1", "app2"):
        if f'"{host}:9000"' not in conf:
            errors.append(f"{conf_file}: no server {host}:9000")
    for key in ('balance = "least-conn"', 'type = "websocket"', 'upgrade = "terminate"'):
        if key not in conf:
            errors.append(f"{conf_file}: no {key}")
    bridge = conf_value(conf, "bridge")
    echo_ip = ((services["tcp-echo"].get("networks") or {}).get("demo") or {}).get("ipv4_address")
    if bridge is None or echo_ip is None or bridge != f"{echo_ip}:7000":
        errors.append(f"bridge {bridge!r} is not tcp-echo's fixed address {echo_ip}:7000")
    return errors


def main():
    failed = 0
    for name, fn in (("compose.yaml", check_compose), ("kubernetes.yaml", check_kubernetes)):
        errors = fn()
        for e in errors:
            print(f"  {e}")
        print(f"{'PASS' if not errors else 'FAIL'} {name}: YAML, known keys, cross-references")
        failed += bool(errors)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
