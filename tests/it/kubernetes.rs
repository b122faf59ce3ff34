//! The Kubernetes manifests in `deploy/kubernetes/`: valid against the API schemas (checked
//! offline by `kubernetes-validate`, which bundles them; `.ci/run` installs it from PyPI),
//! consistent with each other (one shard per StatefulSet replica, selectors that match, the job
//! name the alerts expect), and carrying a config the real binary accepts.

use std::path::PathBuf;
use std::process::Command;

use crate::common::*;
use serde_json::Value;

/// The oldest Kubernetes the manifests support: the pod-index label that becomes the shard
/// index appeared in 1.28.
const OLDEST_KUBERNETES: &str = "1.28.0";

/// The manifests with a schema in Kubernetes itself; the PodMonitor is a Prometheus Operator
/// custom resource, checked below by hand.
const CORE: &[&str] = &[
    "configmap.yaml",
    "service.yaml",
    "statefulset.yaml",
    "discovery.yaml",
];

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes")
}

fn manifest(name: &str) -> Value {
    let text = std::fs::read_to_string(dir().join(name)).expect("read manifest");
    serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{name} is not YAML: {e}"))
}

/// Runs `kubernetes-validate --strict` on `files`; returns success and what it said.
fn kubernetes_validate(extra: &[&str], files: &[PathBuf]) -> (bool, String) {
    run_tool(
        Command::new("kubernetes-validate")
            .arg("--strict")
            .args(extra)
            .args(files),
        "pip install kubernetes-validate (.ci/run does)",
    )
}

#[test]
fn the_manifests_validate_against_the_kubernetes_schemas() {
    if !needs(&[Tool::KubernetesValidate]) {
        return;
    }
    let files: Vec<PathBuf> = CORE.iter().map(|f| dir().join(f)).collect();
    for version in [&["-k", OLDEST_KUBERNETES][..], &[]] {
        let (ok, said) = kubernetes_validate(version, &files);
        assert!(ok, "kubernetes-validate {version:?}:\n{said}");
        for resource in [
            "configmap/healthsweep",
            "service/healthsweep",
            "statefulset/healthsweep",
            "service/orders-api-pods",
        ] {
            assert!(
                said.contains(&format!("passed for resource {resource}")),
                "{resource} not validated:\n{said}"
            );
        }
    }

    // The validator does reject a broken manifest, so its pass above means something.
    let scratch = TempDir::new("k8s");
    let broken = scratch.path().join("statefulset.yaml");
    let text = std::fs::read_to_string(dir().join("statefulset.yaml")).expect("read statefulset");
    std::fs::write(&broken, text.replace("replicas: 3", "replicas: three")).expect("write");
    let (ok, said) = kubernetes_validate(&[], &[broken]);
    assert!(!ok, "a string replica count passed:\n{said}");
}

#[test]
fn each_statefulset_replica_runs_its_own_shard_and_the_manifests_agree() {
    let sts = manifest("statefulset.yaml");
    let replicas = sts["spec"]["replicas"].as_u64().expect("replicas");
    let pod = &sts["spec"]["template"];
    let container = &pod["spec"]["containers"][0];
    let args: Vec<&str> = container["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| a.as_str().expect("string args"))
        .collect();
    assert!(
        args.contains(&format!("--shard=$(POD_INDEX)/{replicas}").as_str()),
        "the shard count must equal replicas ({replicas}): {args:?}"
    );
    let pod_index = container["env"]
        .as_array()
        .expect("env")
        .iter()
        .find(|e| e["name"] == "POD_INDEX")
        .expect("a POD_INDEX variable");
    assert_eq!(
        pod_index["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.labels['apps.kubernetes.io/pod-index']"
    );
    assert_eq!(args[0], "run");

    // Selectors match the pods; the port names line up.
    let labels = &pod["metadata"]["labels"];
    let selects = |selector: &Value| {
        selector
            .as_object()
            .expect("a label selector")
            .iter()
            .all(|(k, v)| &labels[k] == v)
    };
    assert!(selects(&sts["spec"]["selector"]["matchLabels"]));
    let service = manifest("service.yaml");
    assert!(selects(&service["spec"]["selector"]));
    assert_eq!(sts["spec"]["serviceName"], service["metadata"]["name"]);
    assert_eq!(service["spec"]["ports"][0]["targetPort"], "http");
    assert_eq!(container["ports"][0]["name"], "http");

    // The PodMonitor scrapes those pods as job "healthsweep", the job the alerts select.
    let monitor = manifest("podmonitor.yaml");
    assert_eq!(monitor["kind"], "PodMonitor");
    assert!(selects(&monitor["spec"]["selector"]["matchLabels"]));
    assert_eq!(monitor["spec"]["podMetricsEndpoints"][0]["port"], "http");
    let job_label = monitor["spec"]["jobLabel"].as_str().expect("jobLabel");
    assert_eq!(labels[job_label], "healthsweep");

    // The config comes from the ConfigMap, mounted where the daemon reads it.
    let config_map = manifest("configmap.yaml");
    let volume = &pod["spec"]["volumes"][0];
    assert_eq!(volume["configMap"]["name"], config_map["metadata"]["name"]);
    assert_eq!(
        container["volumeMounts"][0]["mountPath"],
        "/etc/healthsweep"
    );
    assert!(args.contains(&"--config=/etc/healthsweep/healthsweep.toml"));
}

#[test]
fn the_configmap_holds_a_config_the_daemon_accepts_listening_on_the_pod_ip() {
    let config_map = manifest("configmap.yaml");
    let toml = config_map["data"]["healthsweep.toml"]
        .as_str()
        .expect("healthsweep.toml in the ConfigMap");
    assert!(toml.contains("listen = \"0.0.0.0:9915\""), "{toml}");
    let scratch = TempDir::new("k8s-config");
    let path = scratch.path().join("healthsweep.toml");
    std::fs::write(&path, toml).expect("write config");
    let out = Command::new(bin())
        .args(["validate", "--config"])
        .arg(&path)
        .output()
        .expect("run validate");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_discovery_example_asks_for_the_srv_records_of_its_headless_service() {
    let service = manifest("discovery.yaml");
    let spec = &service["spec"];
    assert_eq!(
        spec["clusterIP"], "None",
        "SRV per pod needs a headless Service"
    );
    assert_eq!(spec["publishNotReadyAddresses"], true);
    let port = spec["ports"][0]["name"].as_str().expect("a named port");
    let protocol = spec["ports"][0]["protocol"]
        .as_str()
        .expect("protocol")
        .to_lowercase();
    let name = service["metadata"]["name"].as_str().expect("name");
    let namespace = service["metadata"]["namespace"]
        .as_str()
        .expect("namespace");
    let srv = format!("_{port}._{protocol}.{name}.{namespace}.svc.cluster.local");

    let config_map = manifest("configmap.yaml");
    let toml = config_map["data"]["healthsweep.toml"]
        .as_str()
        .expect("config");
    let config: toml::Value = toml::from_str(toml).expect("TOML");
    let sources = config["discover"].as_array().expect("[[discover]]");
    let dns = sources
        .iter()
        .find(|d| d["name"].as_str() == Some("orders-pods"))
        .expect("the orders-pods source");
    assert_eq!(dns["dns"]["names"][0].as_str(), Some(srv.as_str()));
}
