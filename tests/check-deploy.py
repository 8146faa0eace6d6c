#!/usr/bin/env python3
"""The deploy/ files say what a real host needs, and agree with each other and the node.

Usage: check-deploy.py DEPLOY_DIR CACHENODE_BINARY

- deploy/k8s/*.yaml parse (PyYAML, Debian python3-yaml); the DaemonSet runs on the host
  network with IPC_LOCK, hugepages (requests = limits, an emptyDir of that medium mounted at
  --huge-dir, --socket-mem within them and large enough for the pool), an RDMA resource, and
  probes on the ports it listens on; its config file is accepted by the node's own parser;
  the Redis URL in it names the Service of redis.yaml, its port and the password of that
  Secret; the Service selects the Deployment's pods.
- deploy/cachenode.service: memlock unlimited, restart on failure, a stop timeout longer
  than the node's drain, the hugepage check before start; `systemd-analyze verify` has
  nothing to say about it (where systemd-analyze exists).
- deploy/cachenode-check-hugepages: refuses missing, too few or unmounted hugepages, and
  lets --no-huge and enough hugepages through.

Exit 77 (skipped) when PyYAML is missing.
"""
import configparser
import os
import re
import shutil
import subprocess
import sys
import tempfile

try:
    import yaml
except ImportError:
    print("SKIP: python3-yaml is not installed")
    sys.exit(77)

deploy, node_bin = sys.argv[1], sys.argv[2]
failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
    return cond


def docs(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def find(objs, kind, name=None):
    for o in objs:
        if o.get("kind") == kind and (name is None or o["metadata"]["name"] == name):
            return o
    raise SystemExit(f"FAIL: no {kind} {name or ''} in the manifests")


def quantity_mib(q):
    units = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024, "Ti": 1024 * 1024}
    m = re.fullmatch(r"(\d+)(Ki|Mi|Gi|Ti)", str(q))
    if not m:
        raise SystemExit(f"FAIL: quantity {q!r}")
    return int(m.group(1)) * units[m.group(2)]


def size_mib(s):
    m = re.fullmatch(r"(\d+)([KMGT]?)", s.strip())
    if not check(m is not None, f"size {s!r}: not N[KMGT]"):
        return 0
    mul = {"": 1 / 2**20, "K": 1 / 1024, "M": 1, "G": 1024, "T": 1024**2}
    return int(m.group(1)) * mul[m.group(2)]


# ---- Kubernetes ----
k8s = os.path.join(deploy, "k8s")
objs = []
for name in sorted(os.listdir(k8s)):
    if name.endswith(".yaml"):
        for d in docs(os.path.join(k8s, name)):
            check({"apiVersion", "kind", "metadata"} <= d.keys(), f"{name}: {d.get('kind')} incomplete")
            if d["kind"] != "Namespace":
                check(d["metadata"].get("namespace") == "cachenode",
                      f"{name}: {d['kind']} {d['metadata']['name']} not in namespace cachenode")
            objs.append(d)
find(objs, "Namespace", "cachenode")

ds = find(objs, "DaemonSet", "cachenode")
pod = ds["spec"]["template"]["spec"]
check(ds["spec"]["selector"]["matchLabels"].items() <= ds["spec"]["template"]["metadata"]["labels"].items(),
      "DaemonSet selector does not match its pods")
check(pod.get("hostNetwork") is True, "DaemonSet: hostNetwork must be true")
check(pod.get("dnsPolicy") == "ClusterFirstWithHostNet", "DaemonSet: dnsPolicy ClusterFirstWithHostNet (service names from the host network)")
c = pod["containers"][0]
args = c["args"]
check("--" in args, "DaemonSet: no EAL arguments after --")
node_args = args[: args.index("--")] if "--" in args else args
eal = args[args.index("--") + 1:] if "--" in args else []
opts = dict(a[2:].split("=", 1) for a in node_args if a.startswith("--") and "=" in a)
check("IPC_LOCK" in c.get("securityContext", {}).get("capabilities", {}).get("add", []),
      "DaemonSet: capability IPC_LOCK (registering the pool with the NIC)")
req, lim = c["resources"]["requests"], c["resources"]["limits"]
huge = [k for k in req if k.startswith("hugepages-")]
check(len(huge) == 1, "DaemonSet: one hugepages-<size> request")
for k in huge:
    check(req[k] == lim.get(k), f"DaemonSet: {k} requests must equal limits")
check(any(k.startswith("rdma/") for k in req), "DaemonSet: an rdma/... device resource")
for k in req:
    check(str(req[k]) == str(lim.get(k)), f"DaemonSet: {k}: requests != limits (Guaranteed QoS)")
vols = {v["name"]: v for v in pod["volumes"]}
mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
hv = [n for n, v in vols.items() if v.get("emptyDir", {}).get("medium", "").startswith("HugePages")]
check(len(hv) == 1, "DaemonSet: an emptyDir volume of medium HugePages-*")
huge_dir = next((a.split("=", 1)[1] for a in eal if a.startswith("--huge-dir=")), None)
check(hv and mounts.get(hv[0]) == huge_dir, f"DaemonSet: the hugepage volume must be mounted at --huge-dir ({huge_dir})")
check(hv and vols[hv[0]]["emptyDir"]["medium"] == "HugePages-" + huge[0].split("-", 1)[1],
      "DaemonSet: the volume's hugepage size must be the requested one")
socket_mem = next((int(a.split("=", 1)[1]) for a in eal if a.startswith("--socket-mem=")), 0)
check(0 < socket_mem <= quantity_mib(lim[huge[0]]), f"DaemonSet: --socket-mem {socket_mem} MiB over the hugepage limit {lim[huge[0]]}")

# the config file: accepted by the node itself, and big enough hugepages for its pool
secret = find(objs, "Secret", "cachenode-config")
conf = secret["stringData"]["cachenode.conf"]
cfg_path = opts.get("config", "")
check(os.path.dirname(cfg_path) == mounts.get("config"), "DaemonSet: --config is not in the mounted Secret")
check(vols.get("config", {}).get("secret", {}).get("secretName") == "cachenode-config", "DaemonSet: config volume")
with tempfile.NamedTemporaryFile("w", suffix=".conf", delete=False) as f:
    f.write(conf)
r = subprocess.run([node_bin, "--config", f.name, "--listen", "127.0.0.1:7700", "--version"],
                   capture_output=True, text=True)
check(r.returncode == 0, f"the node refuses the DaemonSet's config file: {r.stderr.strip()}")
os.unlink(f.name)
kv = dict(re.split(r"\s*=\s*|\s+", line.strip(), maxsplit=1) for line in conf.splitlines()
          if line.strip() and not line.strip().startswith("#"))
l1 = size_mib(kv["l1-size"])
check(socket_mem >= l1 * 17 / 16 + 256,
      f"DaemonSet: --socket-mem {socket_mem} MiB cannot hold l1-size {kv['l1-size']} + 1/16 metadata + DPDK's own")
grace_s = int(kv.get("shutdown-grace", "5000")) / 1000
check(pod.get("terminationGracePeriodSeconds", 30) >= grace_s + 5,
      "DaemonSet: terminationGracePeriodSeconds shorter than the drain (shutdown-grace) and leave")
# ports and probes
ports = {p["name"]: p["containerPort"] for p in c["ports"]}
check(opts.get("listen", "").endswith(f":{ports.get('cachenode')}"), "DaemonSet: --listen port is not the cachenode port")
check(opts.get("http", "").endswith(f":{ports.get('http')}"), "DaemonSet: --http port is not the http port")
check(c["readinessProbe"]["httpGet"]["path"] == "/api/healthz" and c["readinessProbe"]["httpGet"]["port"] in ports,
      "DaemonSet: readiness on /api/healthz of a declared port")
for probe in ("livenessProbe", "startupProbe"):
    p = c.get(probe, {})
    port = p.get("tcpSocket", p.get("httpGet", {})).get("port")
    check(port in ports, f"DaemonSet: {probe} on an undeclared port {port}")
env = {e["name"] for e in c.get("env", [])}
for ref in re.findall(r"\$\((\w+)\)", " ".join(args)):
    check(ref in env, f"DaemonSet: $({ref}) used in args but not in env")

# the registry: the URL names redis.yaml's Service, port and password
m = re.fullmatch(r"redis://:([^@]+)@([^:/]+):(\d+)/(\d+)", kv.get("redis", ""))
check(m is not None, "config: redis = redis://:PASSWORD@HOST:PORT/DB")
svc = find(objs, "Service", "redis")
dep = find(objs, "Deployment", "redis")
if m:
    check(m.group(2) == f"{svc['metadata']['name']}.{svc['metadata']['namespace']}.svc.cluster.local",
          "config: the Redis host is not the redis Service's name")
    check(int(m.group(3)) == svc["spec"]["ports"][0]["port"], "config: the Redis port is not the Service's")
    check(m.group(1) == find(objs, "Secret", "cachenode-redis")["stringData"]["password"],
          "config: the Redis password differs from Secret cachenode-redis")
check(svc["spec"]["selector"].items() <= dep["spec"]["template"]["metadata"]["labels"].items(),
      "Service redis does not select the Deployment's pods")
rc = dep["spec"]["template"]["spec"]["containers"][0]
check(svc["spec"]["ports"][0]["targetPort"] in {p["name"] for p in rc["ports"]}, "Service targetPort not a port of Redis")
check("--requirepass" in rc["args"], "Redis without a password")

# ---- systemd ----
unit_path = os.path.join(deploy, "cachenode.service")
unit = configparser.ConfigParser(strict=False, interpolation=None)
unit.optionxform = str
unit.read(unit_path)
svc_u = unit["Service"]
check(svc_u.get("LimitMEMLOCK") == "infinity", "unit: LimitMEMLOCK=infinity")
check(svc_u.get("Restart") == "on-failure", "unit: Restart=on-failure")
check("--config /etc/cachenode/cachenode.conf" in svc_u.get("ExecStart", ""), "unit: ExecStart with --config")
check(svc_u.get("ExecStart", "").rstrip().endswith("-- $CACHENODE_EAL"), "unit: EAL arguments after --")
check("cachenode-check-hugepages $CACHENODE_EAL" in svc_u.get("ExecStartPre", ""), "unit: hugepage check before start")
check(int(svc_u.get("TimeoutStopSec", "0")) >= 15, "unit: TimeoutStopSec shorter than a drain")
check("CAP_IPC_LOCK" in svc_u.get("CapabilityBoundingSet", ""), "unit: keeps CAP_IPC_LOCK")
check(svc_u.get("PrivateDevices", "no") == "no", "unit: PrivateDevices hides /dev/infiniband and /dev/hugepages")
if shutil.which("systemd-analyze"):
    with tempfile.TemporaryDirectory() as d:
        text = open(unit_path).read()
        text = text.replace("/usr/local/bin/cachenode", os.path.abspath(node_bin))
        text = text.replace("/usr/local/lib/cachenode/cachenode-check-hugepages",
                            os.path.abspath(os.path.join(deploy, "cachenode-check-hugepages")))
        with open(os.path.join(d, "cachenode.service"), "w") as f:
            f.write(text)
        r = subprocess.run(["systemd-analyze", "verify", os.path.join(d, "cachenode.service")],
                           capture_output=True, text=True)
        out = (r.stdout + r.stderr).strip()
        check(r.returncode == 0 and out == "", f"systemd-analyze verify: {out}")
else:
    print("note: systemd-analyze not installed; the unit was checked by its keys only")

# ---- the hugepage check ----
hp = os.path.join(deploy, "cachenode-check-hugepages")


def hugecheck(args, free_pages, mounted):
    with tempfile.TemporaryDirectory() as d:
        with open(os.path.join(d, "meminfo"), "w") as f:
            f.write(f"MemTotal: 1000 kB\nHugePages_Total: {free_pages}\nHugePages_Free: {free_pages}\nHugepagesize: 2048 kB\n")
        with open(os.path.join(d, "mounts"), "w") as f:
            f.write("proc /proc proc rw 0 0\n")
            if mounted:
                f.write("hugetlbfs /dev/hugepages hugetlbfs rw 0 0\n")
        env = dict(os.environ, MEMINFO=os.path.join(d, "meminfo"), MOUNTS=os.path.join(d, "mounts"))
        r = subprocess.run([hp] + args, env=env, capture_output=True, text=True)
        return r.returncode, r.stderr


for args, pages, mounted, want, says in [
    (["--no-huge"], 0, False, 0, ""),
    ([], 0, False, 0, ""),
    (["--socket-mem", "1024", "--huge-dir", "/dev/hugepages"], 0, True, 1, "reserve them"),
    (["--socket-mem=1024", "--huge-dir=/dev/hugepages"], 512, True, 0, ""),
    (["--socket-mem=512,512"], 500, True, 1, "1024 MiB"),
    (["--socket-mem=1024"], 512, False, 1, "not a hugetlbfs mount"),
    (["--in-memory", "--socket-mem=1024"], 512, False, 0, ""),
]:
    rc, err = hugecheck(args, pages, mounted)
    check(rc == want and says in err, f"check-hugepages {args} with {pages} free pages, mounted={mounted}: exit {rc}, {err!r}")

if failures:
    for f in failures:
        print("FAIL:", f)
    sys.exit(1)
print("deploy/ files are consistent")
