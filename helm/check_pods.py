"""Pod-start check: the binary starts on the rendered chart, as a kubelet would start it.

For the default values (with an operator's account and secrets) and for every
`values-*.yaml` in the chart, this renders the chart, lays the rendered ConfigMap and Secret
(and the Secrets an operator would have created) out at the Deployment's mount paths in a
private mount namespace (`unshare -m`), with the pod's user, groups and read-only root
filesystem, starts the container's entrypoint and args with the container's environment, and
asks gRPC health as the kubelet's grpc probes do (startup and liveness: the process;
readiness: the service the chart names). It then runs `paygate check-config` the same way,
scrapes /metrics when the chart exposes it, sends SIGTERM and expects readiness NOT_SERVING
while calls are still taken, then a clean exit within terminationGracePeriodSeconds.

Usage: check_pods.py BINARY   (run as root, with PostgreSQL on 127.0.0.1:5432)
"""

import base64
import hashlib
import json
import os
import pathlib
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import grpc
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from check_chart import CHART, render  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent
PG_ADMIN = os.environ.get("PAYGATE_TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/postgres")


def keypair(tmp, name):
    key = tmp / f"{name}.pem"
    pub = tmp / f"{name}.pub.pem"
    subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048",
                    "-out", str(key)], check=True, capture_output=True)
    subprocess.run(["openssl", "pkey", "-in", str(key), "-pubout", "-out", str(pub)], check=True,
                   capture_output=True)
    return key.read_text(), pub.read_text()


def operator_files(tmp):
    """What an operator puts in the Secret: provider keys, a password, caller tokens."""
    merchant, _ = keypair(tmp, "merchant")
    _, antom_public = keypair(tmp, "antom")
    token = hashlib.sha256(b"billing-token").hexdigest()
    return {
        "antom-merchant-private-key.pem": merchant,
        "antom-public-key.pem": antom_public,
        "payxpert-password": "px-secret\n",
        "caller-tokens": f"billing {token}\nsupport {hashlib.sha256(b'support-token').hexdigest()}\n",
    }


def readme_block(marker):
    """The code block after `<!-- ci: MARKER -->` in the README, as written."""
    lines = (ROOT / "README.md").read_text().splitlines()
    start = lines.index(f"<!-- ci: {marker} -->") + 2
    end = next(i for i in range(start, len(lines)) if lines[i].startswith("```"))
    return "\n".join(lines[start:end])


def default_install(files):
    """The chart's defaults plus what every operator must give: the README's my-values.yaml
    and the two key files it names (as `--set-file` would give them)."""
    values = yaml.safe_load(readme_block("helm-values"))
    values["secrets"] = {"files": {k: files[k] for k in
                                   ("antom-merchant-private-key.pem", "antom-public-key.pem")}}
    return values


def fresh_database(name):
    subprocess.run(["psql", PG_ADMIN, "-q", "-c", f"DROP DATABASE IF EXISTS {name}", "-c",
                    f"CREATE DATABASE {name}"], check=True)
    return PG_ADMIN.rsplit("/", 1)[0] + "/" + name


def entrypoint():
    """The image's ENTRYPOINT, from the Dockerfile the image is built with."""
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if line.startswith("ENTRYPOINT "):
            return json.loads(line[len("ENTRYPOINT "):])
    sys.exit("Dockerfile: no ENTRYPOINT")


def port_free(port):
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the binary binds
        try:
            s.bind(("0.0.0.0", port))
            return True
        except OSError:
            return False


class Pod:
    """One pod of the rendered Deployment, started in a private mount namespace."""

    def __init__(self, manifests, existing_secrets, binary, work):
        docs = [d for path, text in manifests.items() if not path.endswith("NOTES.txt")
                for d in yaml.safe_load_all(text) if d]
        self.by_kind = {}
        for d in docs:
            self.by_kind.setdefault(d["kind"], {})[d["metadata"]["name"]] = d
        (self.deploy,) = self.by_kind["Deployment"].values()
        self.pod = self.deploy["spec"]["template"]["spec"]
        (self.container,) = self.pod["containers"]
        self.existing = existing_secrets
        self.binary = binary
        self.work = work
        self.proc = None
        self.made = []

    def clean(self):
        for d in reversed(self.made):
            d.rmdir()

    def secret(self, name):
        rendered = self.by_kind.get("Secret", {}).get(name)
        if rendered:
            return {k: base64.b64decode(v).decode() for k, v in (rendered.get("data") or {}).items()}
        if name in self.existing:
            return self.existing[name]
        sys.exit(f"the Deployment needs Secret {name!r}, which neither the chart nor the operator has")

    def configmap(self, name):
        cm = self.by_kind.get("ConfigMap", {}).get(name)
        if not cm:
            sys.exit(f"the Deployment needs ConfigMap {name!r}, which the chart does not render")
        return cm.get("data") or {}

    def environment(self):
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOSTNAME": "paygate-0", "HOME": "/"}
        for src in self.container.get("envFrom", []):
            if "secretRef" in src:
                env.update(self.secret(src["secretRef"]["name"]))
            elif "configMapRef" in src:
                env.update(self.configmap(src["configMapRef"]["name"]))
        for e in self.container.get("env", []):
            if "value" in e:
                env[e["name"]] = e["value"]
            elif "secretKeyRef" in e.get("valueFrom", {}):
                ref = e["valueFrom"]["secretKeyRef"]
                env[e["name"]] = self.secret(ref["name"])[ref["key"]]
            elif "configMapKeyRef" in e.get("valueFrom", {}):
                ref = e["valueFrom"]["configMapKeyRef"]
                env[e["name"]] = self.configmap(ref["name"])[ref["key"]]
            else:
                sys.exit(f"env {e['name']}: unsupported source {e.get('valueFrom')}")
        return env

    def lay_out(self):
        """Stages each volume's files (with the kubelet's ownership and modes) and returns the
        shell lines that mount them at the container's paths."""
        sec = self.pod.get("securityContext", {})
        uid, gid = sec.get("runAsUser", 0), sec.get("runAsGroup", 0)
        fs_group = sec.get("fsGroup")
        volumes = {v["name"]: v for v in self.pod.get("volumes", [])}
        mounts = sorted(self.container.get("volumeMounts", []), key=lambda m: m["mountPath"].count("/"))
        # Mount points under directories the host lacks live in tmpfs mounts of their own, on
        # empty directories made for the check (and removed after it).
        tops = []
        for m in mounts:
            top = pathlib.Path(m["mountPath"])
            if top.exists():
                continue
            while not top.parent.exists():
                top = top.parent
            if top not in tops:
                tops.append(top)
        lines = []
        for top in tops:
            top.mkdir()
            self.made.append(top)
            lines.append(f"mount -t tmpfs -o mode=755 tmpfs {shlex.quote(str(top))}")
        late = []
        for m in mounts:
            vol = volumes[m["name"]]
            stage = self.work / "volumes" / m["name"]
            if not stage.exists():
                stage.mkdir(parents=True)
                if "configMap" in vol or "secret" in vol:
                    if "configMap" in vol:
                        data, mode = self.configmap(vol["configMap"]["name"]), vol["configMap"].get("defaultMode", 0o644)
                    else:
                        data, mode = self.secret(vol["secret"]["secretName"]), vol["secret"].get("defaultMode", 0o644)
                    if fs_group is not None:
                        mode |= 0o440  # the kubelet makes the files group-readable for fsGroup
                    for k, v in data.items():
                        f = stage / k
                        f.write_text(v)
                        os.chown(f, 0, fs_group if fs_group is not None else 0)
                        os.chmod(f, mode)
                    os.chmod(stage, 0o755)
                elif "emptyDir" in vol or "persistentVolumeClaim" in vol:
                    os.chown(stage, 0, fs_group if fs_group is not None else 0)
                    os.chmod(stage, 0o2775 if fs_group is not None else 0o777)
                else:
                    sys.exit(f"volume {m['name']}: unsupported kind {sorted(vol)}")
            src = stage / m["subPath"] if m.get("subPath") else stage
            target = shlex.quote(m["mountPath"])
            step = []
            if not pathlib.Path(m["mountPath"]).exists():
                if src.is_dir():
                    step.append(f"mkdir -p {target}")
                else:
                    step.append(f"mkdir -p $(dirname {target}) && touch {target}")
            step.append(f"mount --bind {shlex.quote(str(src))} {target}")
            if m.get("readOnly"):
                step.append(f"mount -o remount,bind,ro {target}")
            # A mount over a directory that holds this check's files (/tmp) comes last.
            (late if str(self.work).startswith(m["mountPath"].rstrip("/") + "/") else lines).extend(step)
        # The image: its entrypoint binary.
        image_dir = self.work / "image"
        image_dir.mkdir()
        shutil.copy(self.binary, image_dir / "paygate")
        os.chmod(image_dir / "paygate", 0o755)
        os.chmod(image_dir, 0o755)
        bin_dir = str(pathlib.Path(entrypoint()[0]).parent)
        lines.append(f"mount --bind {shlex.quote(str(image_dir))} {shlex.quote(bin_dir)}")
        if self.container.get("securityContext", {}).get("readOnlyRootFilesystem"):
            lines.append("mount -o remount,bind,ro /")
        lines.extend(late)
        return lines, uid, gid, fs_group

    def command(self, args=None):
        cmd = self.container.get("command") or entrypoint()
        return cmd + (args if args is not None else self.container.get("args", []))

    def script(self, args=None):
        lines, uid, gid, fs_group = self.layout
        groups = ",".join(str(g) for g in {gid, fs_group} if g is not None) or str(gid)
        env = " ".join(shlex.quote(f"{k}={v}") for k, v in self.env.items())
        run = " ".join(shlex.quote(a) for a in self.command(args))
        return "set -e\n" + "\n".join(lines) + (
            f"\nexec setpriv --reuid={uid} --regid={gid} --groups={groups} --inh-caps=-all "
            f"env -i {env} {run}\n")

    def prepare(self):
        self.env = self.environment()
        self.layout = self.lay_out()

    def run(self, args, **kw):
        return subprocess.run(["unshare", "-m", "--propagation", "private", "bash", "-c",
                               self.script(args)], **kw)

    def start(self, log):
        self.proc = subprocess.Popen(["unshare", "-m", "--propagation", "private", "bash", "-c",
                                      self.script()], stdout=log, stderr=subprocess.STDOUT)


def probe(port, service, timeout=1.0):
    """The kubelet's grpc probe: Health/Check, success only for SERVING."""
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            r = health_pb2_grpc.HealthStub(ch).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout)
            return health_pb2.HealthCheckResponse.ServingStatus.Name(r.status)
    except grpc.RpcError as e:
        return e.code().name


def check(label, values, existing, binary, promtool):
    manifests = render(values)
    with tempfile.TemporaryDirectory(prefix="podcheck-") as tmp:
        work = pathlib.Path(tmp)
        os.chmod(work, 0o755)
        pod = Pod(manifests, existing, binary, work)
        c = pod.container
        for p in c.get("ports", []):
            if not port_free(p["containerPort"]):
                sys.exit(f"{label}: port {p['containerPort']} is in use here; the pod check needs it")
        try:
            pod.prepare()
            run_pod(label, pod, work, promtool)
        finally:
            pod.clean()


def run_pod(label, pod, work, promtool):
    c = pod.container
    # paygate check-config, with the pod's files and environment.
    args = [a if a != "serve" else "check-config" for a in c.get("args", [])]
    out = pod.run(args, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"{label}: paygate check-config failed ({out.returncode}): {out.stderr.strip()}")
    print(f"{label}: {out.stdout.strip()}")

    probes = {k: c[k] for k in ("startupProbe", "livenessProbe", "readinessProbe")}
    for k, p in probes.items():
        if "grpc" not in p:
            sys.exit(f"{label}: {k} is not a grpc probe")
    log_path = work / "pod.log"
    with open(log_path, "wb") as log:
        pod.start(log)
        try:
            started = probes["startupProbe"]
            budget = started.get("periodSeconds", 10) * started.get("failureThreshold", 3)
            t0 = time.monotonic()
            while True:
                state = probe(started["grpc"]["port"], started["grpc"].get("service", ""))
                if state == "SERVING":
                    break
                if pod.proc.poll() is not None or time.monotonic() - t0 > budget:
                    sys.exit(f"{label}: the pod did not start ({state}, exit {pod.proc.poll()}):\n"
                             + log_path.read_text())
                time.sleep(0.2)
            ready = probes["readinessProbe"]["grpc"]
            live = probes["livenessProbe"]["grpc"]
            assert probe(ready["port"], ready.get("service", "")) == "SERVING", "readiness"
            assert probe(live["port"], live.get("service", "")) == "SERVING", "liveness"
            print(f"{label}: started in {time.monotonic() - t0:.1f} s; startup, liveness and "
                  f"readiness ({ready.get('service', '')!r}) probes SERVING")
            metrics_port = next((p["containerPort"] for p in c.get("ports", []) if p["name"] == "metrics"), None)
            if metrics_port:
                with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as r:
                    body = r.read()
                    ctype = r.headers.get("Content-Type", "")
                chk = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True)
                if chk.returncode != 0:
                    sys.exit(f"{label}: promtool check metrics: {chk.stdout.decode()}{chk.stderr.decode()}")
                print(f"{label}: /metrics ({ctype}) passes promtool check metrics")
            env = {e["name"]: e.get("value") for e in c.get("env", [])}
            drain_ms = int(env.get("PAYGATE_SHUTDOWN_DRAIN_DELAY_MS") or 0)
            grace_s = pod.pod.get("terminationGracePeriodSeconds", 30)
            t0 = time.monotonic()
            pod.proc.send_signal(signal.SIGTERM)
            time.sleep(0.3)
            if drain_ms >= 1000:
                r_state = probe(ready["port"], ready.get("service", ""))
                l_state = probe(live["port"], live.get("service", ""))
                if (r_state, l_state) != ("NOT_SERVING", "SERVING"):
                    sys.exit(f"{label}: during the drain delay readiness is {r_state} and liveness "
                             f"{l_state} (want NOT_SERVING, SERVING)")
            try:
                code = pod.proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                sys.exit(f"{label}: still running {grace_s} s (terminationGracePeriodSeconds) after SIGTERM")
            if code != 0:
                sys.exit(f"{label}: exit {code} after SIGTERM:\n" + log_path.read_text())
            print(f"{label}: SIGTERM: readiness NOT_SERVING while draining; exit 0 after "
                  f"{time.monotonic() - t0:.1f} s (grace {grace_s} s)")
        finally:
            if pod.proc.poll() is None:
                pod.proc.kill()
                pod.proc.wait()
    # The pod must have written JSON logs a strict parser reads (when the chart asks for JSON).
    if env.get("PAYGATE_LOG_FORMAT") == "json":
        for line in log_path.read_text().splitlines():
            if line.strip():
                json.loads(line, object_pairs_hook=no_duplicates)


def no_duplicates(pairs):
    keys = [k for k, _ in pairs]
    dup = {k for k in keys if keys.count(k) > 1}
    if dup:
        raise ValueError(f"duplicate keys {dup}")
    return dict(pairs)


def main():
    binary = pathlib.Path(sys.argv[1]).resolve()
    promtool = shutil.which("promtool") or sys.exit("promtool is missing (Debian package prometheus)")
    if os.geteuid() != 0:
        sys.exit("the pod check runs as root (it mounts in a private namespace)")
    with tempfile.TemporaryDirectory() as tmp:
        files = operator_files(pathlib.Path(tmp))
    check("defaults + the README's my-values.yaml", default_install(files), {}, binary, promtool)
    # Every example values file, with the Secrets its operator would have created.
    existing = {
        "paygate-provider-keys": files,
        "paygate-db": {"url": fresh_database("paygate_podcheck")},
    }
    examples = sorted(CHART.glob("values-*.yaml"))
    assert examples, "no values-*.yaml"
    for path in examples:
        check(path.name, yaml.safe_load(path.read_text()), existing, binary, promtool)


if __name__ == "__main__":
    main()
