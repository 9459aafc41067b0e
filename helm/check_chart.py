"""Renders, lints and validates the Helm chart offline (no helm binary, no cluster).

Run by .ci/run: lints the chart, renders it with the default values (plus the account and secret
files every operator must give), with values-production.yaml and with every option set,
validates every manifest against the Kubernetes schemas, and checks that invalid values fail at
render time with a message naming the value to set. check_pods.py then starts the binary on
what it renders.
"""

import pathlib
import re
import shlex
import subprocess
import sys
import tempfile

import helm_python as helm
import yaml

CHART = pathlib.Path(__file__).parent / "paygate"
KUBE_VERSION = "1.30.0"


def render(values):
    chart = helm.Chart.load(str(CHART))
    merged = chart.merge_values(values)
    chart.validate_schema(merged)
    return chart.render(values, name="paygate", namespace="payments", is_install=True)


def validate(manifests, label):
    docs = []
    for path, text in sorted(manifests.items()):
        if path.endswith("NOTES.txt") or not text.strip():
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                docs.append((path, doc))
    kinds = sorted(d["kind"] for _, d in docs)
    print(f"{label}: {len(docs)} manifests: {', '.join(kinds)}")
    with tempfile.TemporaryDirectory() as tmp:
        files = []
        for i, (path, doc) in enumerate(docs):
            if doc["apiVersion"].startswith("monitoring.coreos.com/"):
                continue  # a CRD: no bundled schema
            f = pathlib.Path(tmp) / f"{i}.yaml"
            f.write_text(yaml.safe_dump(doc))
            files.append(str(f))
        subprocess.run(
            [sys.executable, "-m", "kubernetes_validate", "-k", KUBE_VERSION, "--strict", *files],
            check=True,
        )
    return {d["kind"] for _, d in docs}


def must_fail(values, expect, label):
    try:
        render(values)
    except helm.HelmError as e:
        if expect not in str(e):
            sys.exit(f"{label}: failed, but not with {expect!r}: {e}")
        print(f"{label}: refused as expected ({expect})")
        return
    sys.exit(f"{label}: rendered, but must fail")


def operator(extra=None):
    """The defaults plus what every operator must give: an account and its secret files."""
    base = {
        "config": {"accounts": {"antom": {
            "provider": "antom",
            "base_url": "https://open-sea-global.alipay.com",
            "client_id": "5X00000000000000",
            "private_key_file": "/etc/paygate/secrets/antom-merchant-private-key.pem",
            "antom_public_key_file": "/etc/paygate/secrets/antom-public-key.pem",
        }}},
        "secrets": {"files": {"antom-merchant-private-key.pem": "KEY", "antom-public-key.pem": "PUB"}},
    }
    return merge(base, extra or {})


def merge(a, b):
    out = {k: merge(v, {}) if isinstance(v, dict) else v for k, v in a.items()}
    for k, v in b.items():
        out[k] = merge(a[k], v) if isinstance(v, dict) and isinstance(a.get(k), dict) else v
    return out


def config_of(manifests):
    for path, text in manifests.items():
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc and doc["kind"] == "ConfigMap":
                return doc["data"]["paygate.toml"]
    sys.exit("no ConfigMap rendered")


def readme_install():
    """The values of the README's `helm install` command (<!-- ci: helm-install -->): its
    `-f my-values.yaml` (the README's helm-values block), its `--set` values and its
    `--set-file` files (placeholder contents: the key files are the operator's)."""
    lines = (CHART.parent.parent / "README.md").read_text().splitlines()
    def block(marker):
        start = lines.index(f"<!-- ci: {marker} -->") + 2
        end = next(i for i in range(start, len(lines)) if lines[i].startswith("```"))
        return "\n".join(lines[start:end])
    argv = shlex.split(block("helm-install").replace("\\\n", " "))
    assert argv[:4] == ["helm", "install", "paygate", "helm/paygate"], argv
    values, i = {}, 4
    def put(path, value):
        keys = [k.replace("\\.", ".") for k in re.split(r"(?<!\\)\.", path)]
        node = values
        for k in keys[:-1]:
            node = node.setdefault(k, {})
        node[keys[-1]] = value
    while i < len(argv):
        flag, arg = argv[i], argv[i + 1]
        if flag == "-n":
            assert arg == "payments", arg
        elif flag == "-f":
            assert arg == "my-values.yaml", arg
            values = merge(values, yaml.safe_load(block("helm-values")))
        elif flag == "--set":
            put(*arg.split("=", 1))
        elif flag == "--set-file":
            key, path = arg.split("=", 1)
            put(key, f"contents of {path}\n")
        else:
            sys.exit(f"README helm install: unknown flag {flag}")
        i += 2
    return values


def main():
    install = readme_install()
    manifests = render(install)
    validate(manifests, "the README's helm install")
    deployment = next(d for path, t in manifests.items() if not path.endswith("NOTES.txt")
                      for d in yaml.safe_load_all(t) if d and d.get("kind") == "Deployment")
    image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
    want = f"{install['image']['repository']}:{install['image']['tag']}"
    assert image == want, (image, want)
    print(f"the README's helm install: renders, validates, runs the pushed image {image}")

    report = helm.lint(str(CHART), operator(), strict=True, kube_version=f"v{KUBE_VERSION}")
    errors = [m for m in report.get("messages", []) if m.get("severity", 0) >= 2]
    if errors or report.get("errors"):
        sys.exit(f"helm lint: {errors} {report.get('errors')}")
    print("helm lint: clean")

    kinds = validate(render(operator()), "defaults")
    assert {"Deployment", "Service", "ConfigMap", "PersistentVolumeClaim", "Secret", "ServiceAccount"} <= kinds, kinds

    prod = yaml.safe_load((CHART / "values-production.yaml").read_text())
    manifests = render(prod)
    kinds = validate(manifests, "values-production.yaml")
    assert {"HorizontalPodAutoscaler", "PodDisruptionBudget", "NetworkPolicy", "ServiceMonitor", "Ingress"} <= kinds, kinds
    toml = config_of(manifests)
    assert "burst = 10\n" in toml and "max_in_flight_requests = 1024\n" in toml, toml
    assert "CHANGE_ME" not in toml and "accounts.antom." not in toml, "a sample account leaked in:\n" + toml
    print("values-production.yaml: whole numbers render as TOML integers; no sample account")

    everything = operator({
        "nameOverride": "pg", "fullnameOverride": "payments-gateway",
        "image": {"digest": "sha256:" + "ab" * 32},
        "imagePullSecrets": [{"name": "regcred"}],
        "serviceAccount": {"annotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::1:role/paygate"}},
        "podAnnotations": {"a": "b"}, "podLabels": {"team": "payments"},
        "extraEnv": [{"name": "OTEL_EXPORTER_OTLP_ENDPOINT", "value": "http://otel:4317"}],
        "extraEnvFrom": [{"secretRef": {"name": "more"}}],
        "extraVolumes": [{"name": "ca", "configMap": {"name": "ca"}}],
        "extraVolumeMounts": [{"name": "ca", "mountPath": "/etc/ca", "readOnly": True}],
        "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
                                       "whenUnsatisfiable": "ScheduleAnyway",
                                       "labelSelector": {"matchLabels": {"app.kubernetes.io/name": "pg"}}}],
        "priorityClassName": "payments-critical",
        "podDisruptionBudget": {"maxUnavailable": 1},
        "replicaCount": 2, "store": {"type": "postgres", "url": "postgres://u:p@db/paygate"},
        "networkPolicy": {"enabled": True, "metricsFrom": [{"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}]},
        "prometheusRule": {"enabled": True},
        "events": {"nats": {"url": "nats://nats.messaging:4222", "subjectPrefix": "acme.payments",
                            "stream": "PAYMENTS"}},
        "keyDirectories": {"antom-merchant": {"existingSecret": "antom-merchant-keys"},
                           "antom-public": {"files": {"1.pem": "-----BEGIN PUBLIC KEY-----\n"}}},
    })
    manifests = render(everything)
    kinds = validate(manifests, "every option")
    assert {"PrometheusRule", "NetworkPolicy", "PodDisruptionBudget"} <= kinds, kinds
    text = "\n".join(manifests.values())
    for want in ("payments-gateway", "@sha256:", "regcred", "role-arn", "OTEL_EXPORTER_OTLP_ENDPOINT",
                 "secretRef", "/etc/ca", "topologySpreadConstraints", "payments-critical",
                 "maxUnavailable: 1", "Egress", "PaygateUnknownOutcomes", "PaygateEventRelayLagging",
                 "PAYGATE_EVENTS_NATS_URL", "nats://nats.messaging:4222", "acme.payments", "port: 4222",
                 "mountPath: /etc/paygate/keys/antom-merchant", "secretName: antom-merchant-keys",
                 "mountPath: /etc/paygate/keys/antom-public", "payments-gateway-keys-antom-public"):
        assert want in text, want
    assert "subPath: 1.pem" not in text and "checksum/secret" not in text, \
        "key directories are mounted whole, and a Secret's change reaches running pods in place"

    must_fail({"replicaCount": 2}, "needs store.type=postgres", "two replicas with SQLite")
    must_fail({"autoscaling": {"enabled": True}}, "needs store.type=postgres", "autoscaling with SQLite")
    must_fail(operator({"replicaCount": "three"}), "replicaCount", "a non-integer replica count")
    must_fail({}, "config.accounts is empty", "no account")
    lacking = operator()
    del lacking["secrets"]["files"]["antom-merchant-private-key.pem"]
    must_fail(lacking, "secrets.files.antom-merchant-private-key.pem", "a key file the Secret lacks")
    must_fail(operator({"auth": {"tokensFile": "caller-tokens"}}), "secrets.files.caller-tokens",
              "a tokens file the Secret lacks")
    must_fail(operator({"replicas": 3}), "replicas", "an unknown key (replicas)")
    must_fail(operator({"podAnotations": {"a": "b"}}), "podAnotations", "a misspelt key (podAnotations)")
    must_fail(operator({"terminationGracePeriodSeconds": 20}), "must exceed", "a grace period shorter than the drain")
    must_fail(operator({"events": {"nats": {"subjectPrefix": "a.>"}}}), "subjectPrefix",
              "a subject prefix with a wildcard")
    must_fail(operator({"keyDirectories": {"antom": {"files": {"merchant.pem": "x"}}}}), "merchant.pem",
              "a key directory file not named <version>.pem")
    # With an existing Secret the chart cannot see its keys: no file check.
    render(operator({"secrets": {"existingSecret": "keys", "files": {}}}))


if __name__ == "__main__":
    main()
