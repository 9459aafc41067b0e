"""Renders, lints and validates the Helm chart offline (no helm binary, no cluster).

Run by .ci/run: lints the chart, renders it with the default values and with
values-production.yaml, validates every manifest against the Kubernetes schemas, and checks
that invalid values (two replicas with SQLite, a non-integer replica count) fail with a clear
message.
"""

import pathlib
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


def main():
    report = helm.lint(str(CHART), strict=True, kube_version=f"v{KUBE_VERSION}")
    errors = [m for m in report.get("messages", []) if m.get("severity", 0) >= 2]
    if errors or report.get("errors"):
        sys.exit(f"helm lint: {errors} {report.get('errors')}")
    print("helm lint: clean")

    kinds = validate(render({}), "defaults")
    assert {"Deployment", "Service", "ConfigMap", "PersistentVolumeClaim"} <= kinds, kinds

    prod = yaml.safe_load((CHART / "values-production.yaml").read_text())
    kinds = validate(render(prod), "values-production.yaml")
    assert {"HorizontalPodAutoscaler", "PodDisruptionBudget", "NetworkPolicy", "ServiceMonitor", "Ingress"} <= kinds, kinds

    must_fail({"replicaCount": 2}, "needs store.type=postgres", "two replicas with SQLite")
    must_fail({"autoscaling": {"enabled": True}}, "needs store.type=postgres", "autoscaling with SQLite")
    must_fail({"replicaCount": "three"}, "replicaCount", "a non-integer replica count")
    must_fail({"store": {"type": "postgres"}}, "store.existingSecret or store.url", "postgres without a URL")
    print("chart checks passed")


if __name__ == "__main__":
    main()
