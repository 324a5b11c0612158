//! The deployment files agree with the code and with the operations runbook.
//!
//! There is no Docker engine or cluster here, so these tests read the files: every manifest in
//! `k8s/` (namespace, labels and selectors, probes, security context, grace period, the HPA's
//! numbers, the ConfigMap against the settings `src/` declares, the init Job, the IAM
//! annotations), the `Dockerfile` (stages, user, ports, health check, binaries, volume), and the
//! monitoring files (every metric an alert or a dashboard panel uses is one a running server
//! exports, and the runbook's thresholds are there).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{CommandFactory, Parser};
use eleanor_ledger::app::Application;
use eleanor_ledger::config::ServerArgs;
use eleanor_ledger::init::InitArgs;
use serde::Deserialize;
use serde_json::{Value, json};

/// The runbook's conventions ("Common Operations", "Scaling").
const NAMESPACE: &str = "eleanor-v8";
const APP: &str = "eleanor-v8";
const CONFIGMAP: &str = "eleanor-v8-config";
/// Settings the ConfigMap must not hold: production talks to AWS itself, never an emulator.
const NOT_IN_PRODUCTION: &[&str] = &["ELEANOR_LEDGER_AWS_ENDPOINT_URL"];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(relative: &str) -> String {
    let path = root().join(relative);
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

// ---------------------------------------------------------------------------------------------
// Reading the files
// ---------------------------------------------------------------------------------------------

/// One YAML document of a file under `k8s/`.
#[derive(Debug, Clone)]
struct Manifest {
    file: String,
    doc: Value,
}

impl Manifest {
    fn kind(&self) -> &str {
        self.doc["kind"].as_str().unwrap_or("")
    }
    fn name(&self) -> &str {
        self.doc["metadata"]["name"].as_str().unwrap_or("")
    }
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            yaml_files(&path, out);
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml")
        ) {
            out.push(path);
        }
    }
}

fn manifests() -> Vec<Manifest> {
    let mut files = Vec::new();
    yaml_files(&root().join("k8s"), &mut files);
    files.sort();
    assert!(!files.is_empty(), "k8s/ holds no manifests");
    let mut all = Vec::new();
    for path in files {
        let file = path
            .strip_prefix(root())
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let text = fs::read_to_string(&path).unwrap();
        for document in serde_norway::Deserializer::from_str(&text) {
            let doc = Value::deserialize(document)
                .unwrap_or_else(|e| panic!("{file} is not valid YAML: {e}"));
            if !doc.is_null() {
                all.push(Manifest {
                    file: file.clone(),
                    doc,
                });
            }
        }
    }
    all
}

fn find(kind: &str, name: &str) -> Value {
    let found: Vec<Manifest> = manifests()
        .into_iter()
        .filter(|m| m.kind() == kind && m.name() == name)
        .collect();
    assert_eq!(found.len(), 1, "expected exactly one {kind} {name} in k8s/");
    found[0].doc.clone()
}

fn deployment() -> Value {
    find("Deployment", APP)
}

fn server_container() -> Value {
    let containers = deployment()["spec"]["template"]["spec"]["containers"].clone();
    let containers = containers.as_array().expect("containers is a list");
    assert_eq!(containers.len(), 1, "the server pod runs one container");
    containers[0].clone()
}

fn init_job() -> Value {
    find("Job", "eleanor-v8-init")
}

fn configmap() -> BTreeMap<String, String> {
    let data = find("ConfigMap", CONFIGMAP)["data"].clone();
    data.as_object()
        .expect("the ConfigMap has data")
        .iter()
        .map(|(k, v)| {
            let v = v
                .as_str()
                .unwrap_or_else(|| panic!("ConfigMap value {k} must be a quoted string"));
            (k.clone(), v.to_owned())
        })
        .collect()
}

fn labels_match(selector: &Value, labels: &Value) -> bool {
    let selector = selector.as_object().expect("a selector is a map");
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// The container port a probe or Service names, by number or by name.
fn resolve_port(port: &Value, container: &Value) -> u64 {
    let ports = container["ports"]
        .as_array()
        .expect("the container declares ports");
    match port {
        Value::Number(n) => n.as_u64().unwrap(),
        Value::String(name) => ports
            .iter()
            .find(|p| p["name"].as_str() == Some(name))
            .unwrap_or_else(|| panic!("no container port is named {name}"))["containerPort"]
            .as_u64()
            .unwrap(),
        other => panic!("a port is a number or a name, got {other}"),
    }
}

/// `500m` -> 0.5, `2` -> 2.0.
fn cpu_cores(quantity: &Value) -> f64 {
    let text = match quantity {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    match text.strip_suffix('m') {
        Some(milli) => milli.parse::<f64>().unwrap() / 1000.0,
        None => text.parse().unwrap(),
    }
}

/// `1Gi` -> 1073741824.
fn bytes(quantity: &Value) -> u64 {
    let text = quantity.as_str().expect("a memory quantity is a string");
    for (suffix, factor) in [("Ki", 1u64 << 10), ("Mi", 1 << 20), ("Gi", 1 << 30)] {
        if let Some(n) = text.strip_suffix(suffix) {
            return n.parse::<u64>().unwrap() * factor;
        }
    }
    text.parse().unwrap()
}

/// `ELEANOR_LEDGER_*` names declared with `env = "..."` anywhere under `src/`.
fn settings_declared_in_source() -> BTreeSet<String> {
    fn walk(dir: &Path, names: &mut BTreeSet<String>) {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, names);
            } else if path.extension().and_then(|e| e.to_str()) == Some("rs") {
                let text = fs::read_to_string(&path).unwrap();
                let compact: String = text.split_whitespace().collect();
                for piece in compact.split("env=\"ELEANOR_LEDGER_").skip(1) {
                    let tail: String = piece.chars().take_while(|c| *c != '"').collect();
                    names.insert(format!("ELEANOR_LEDGER_{tail}"));
                }
            }
        }
    }
    let mut names = BTreeSet::new();
    walk(&root().join("src"), &mut names);
    assert!(
        names.contains("ELEANOR_LEDGER_BACKEND"),
        "found no settings in src/"
    );
    names
}

/// `(env name, long flag)` of every argument of a binary's parser.
fn env_flags(command: &clap::Command) -> BTreeMap<String, String> {
    command
        .get_arguments()
        .filter_map(|arg| {
            let env = arg.get_env()?.to_str()?.to_owned();
            let long = arg.get_long()?.to_owned();
            Some((env, long))
        })
        .collect()
}

/// Command-line arguments equivalent to the ConfigMap, for the settings `command` reads.
/// The files `*_FILE` settings name come from the pod's volumes; `files` stands in for them.
fn argv_from_configmap(
    bin: &str,
    command: &clap::Command,
    files: &BTreeMap<String, PathBuf>,
) -> Vec<String> {
    let flags = env_flags(command);
    let mut argv = vec![bin.to_owned()];
    for (key, mut value) in configmap() {
        if key.ends_with("_FILE") {
            assert!(value.starts_with('/'), "{key} is an absolute path");
            let stand_in = files
                .get(&key)
                .unwrap_or_else(|| panic!("no stand-in file for {key}"));
            value = stand_in.to_str().unwrap().to_owned();
        }
        if let Some(long) = flags.get(&key) {
            argv.push(format!("--{long}={value}"));
        }
    }
    argv
}

/// `[[bin]]` names of Cargo.toml, the package version, and every file Cargo.toml names.
struct CargoManifest {
    version: String,
    bins: BTreeSet<String>,
    /// Paths a build needs: `[[bin]]` paths, and `benches/NAME.rs` of every `[[bench]]`.
    paths: BTreeSet<String>,
}

fn cargo_manifest() -> CargoManifest {
    let text = read("Cargo.toml");
    let mut section = String::new();
    let mut version = None;
    let mut bins = BTreeSet::new();
    let mut paths = BTreeSet::new();
    let value = |line: &str| {
        line.split_once('=')
            .unwrap()
            .1
            .trim()
            .trim_matches('"')
            .to_owned()
    };
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            section = line.to_owned();
            continue;
        }
        match (
            section.as_str(),
            line.split_once('=').map(|(k, _)| k.trim()),
        ) {
            ("[package]", Some("version")) => version = Some(value(line)),
            ("[[bin]]", Some("name")) => {
                bins.insert(value(line));
            }
            ("[[bin]]", Some("path")) => {
                paths.insert(value(line));
            }
            ("[[bench]]", Some("name")) => {
                paths.insert(format!("benches/{}.rs", value(line)));
            }
            _ => {}
        }
    }
    CargoManifest {
        version: version.expect("Cargo.toml has a package version"),
        bins,
        paths,
    }
}

// ---------------------------------------------------------------------------------------------
// Kubernetes manifests
// ---------------------------------------------------------------------------------------------

#[test]
fn every_manifest_parses_and_lives_in_the_runbook_namespace_with_an_app_label() {
    let all = manifests();
    let kinds: BTreeSet<&str> = all.iter().map(Manifest::kind).collect();
    for kind in [
        "Deployment",
        "Service",
        "ConfigMap",
        "HorizontalPodAutoscaler",
        "Job",
        "ServiceAccount",
        "PrometheusRule",
        "ServiceMonitor",
        "NetworkPolicy",
    ] {
        assert!(kinds.contains(kind), "k8s/ has no {kind}");
    }
    for m in &all {
        let what = format!("{} {} ({})", m.kind(), m.name(), m.file);
        assert!(m.doc["apiVersion"].is_string(), "{what}: no apiVersion");
        assert!(!m.name().is_empty(), "{what}: no metadata.name");
        if m.kind() == "Namespace" {
            assert_eq!(m.name(), NAMESPACE, "{what}");
        } else {
            assert_eq!(
                m.doc["metadata"]["namespace"].as_str(),
                Some(NAMESPACE),
                "{what}: namespace"
            );
        }
        let app = m.doc["metadata"]["labels"]["app"].as_str();
        assert!(
            matches!(app, Some("eleanor-v8" | "eleanor-v8-init")),
            "{what}: label app is {app:?}"
        );
    }
}

#[test]
fn the_deployment_service_pdb_and_service_monitor_select_the_server_pods_only() {
    let deployment = deployment();
    let pod_labels = &deployment["spec"]["template"]["metadata"]["labels"];
    assert_eq!(pod_labels["app"], APP);
    let selector = &deployment["spec"]["selector"]["matchLabels"];
    assert_eq!(
        selector,
        &json!({ "app": APP }),
        "the runbook's -l app={APP}"
    );
    assert!(labels_match(selector, pod_labels));

    let service = find("Service", APP);
    let service_selector = &service["spec"]["selector"];
    assert!(labels_match(service_selector, pod_labels));
    let job_pod_labels = &init_job()["spec"]["template"]["metadata"]["labels"];
    assert!(
        !labels_match(service_selector, job_pod_labels),
        "the init Job's pods must not receive the Service's traffic"
    );
    assert!(!labels_match(selector, job_pod_labels));

    let pdb = find("PodDisruptionBudget", APP);
    assert!(labels_match(
        &pdb["spec"]["selector"]["matchLabels"],
        pod_labels
    ));

    let monitor = find("ServiceMonitor", APP);
    assert!(labels_match(
        &monitor["spec"]["selector"]["matchLabels"],
        &service["metadata"]["labels"]
    ));
    let port_names: Vec<&Value> = service["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| &p["name"])
        .collect();
    for endpoint in monitor["spec"]["endpoints"].as_array().unwrap() {
        assert!(port_names.contains(&&endpoint["port"]), "{endpoint}");
        assert_eq!(endpoint["path"], "/metrics");
    }

    // The HPA scales this deployment, which leaves the replica count to it.
    let hpa = find("HorizontalPodAutoscaler", "eleanor-v8-hpa");
    assert_eq!(hpa["spec"]["scaleTargetRef"]["name"], APP);
    assert!(
        deployment["spec"].get("replicas").is_none(),
        "with an HPA, `replicas` in the deployment resets the count on every apply"
    );
}

#[test]
fn probes_hit_health_and_livez_on_the_container_port_that_the_service_and_configmap_use() {
    let container = server_container();
    let port = resolve_port(&json!("http"), &container);
    assert_eq!(port, 8080);
    for (probe, path) in [
        ("readinessProbe", "/health"),
        ("livenessProbe", "/livez"),
        ("startupProbe", "/livez"),
    ] {
        let get = &container[probe]["httpGet"];
        assert_eq!(
            get["path"], path,
            "{probe}: readiness follows the dependencies; liveness and startup only the process (a pod started during an outage must wait, not crash-loop)"
        );
        assert_eq!(resolve_port(&get["port"], &container), port, "{probe}");
    }
    let service = find("Service", APP);
    for p in service["spec"]["ports"].as_array().unwrap() {
        assert_eq!(resolve_port(&p["targetPort"], &container), port);
    }
    let listen = &configmap()["ELEANOR_LEDGER_LISTEN"];
    assert_eq!(listen, &format!("0.0.0.0:{port}"), "listen on the pod's IP");
}

fn assert_locked_down(what: &str, pod: &Value, container: &Value) {
    let user = dockerfile_user();
    for (level, ctx) in [
        ("pod", &pod["securityContext"]),
        ("container", &container["securityContext"]),
    ] {
        assert_eq!(ctx["runAsNonRoot"], true, "{what} {level}: runAsNonRoot");
        assert_eq!(
            ctx["runAsUser"].as_u64(),
            Some(user),
            "{what} {level}: runAsUser is the Dockerfile's USER"
        );
    }
    let ctx = &container["securityContext"];
    assert_eq!(ctx["readOnlyRootFilesystem"], true, "{what}");
    assert_eq!(ctx["allowPrivilegeEscalation"], false, "{what}");
    assert_ne!(ctx["privileged"], true, "{what}");
    assert_eq!(ctx["capabilities"]["drop"], json!(["ALL"]), "{what}");
    assert!(ctx["capabilities"].get("add").is_none(), "{what}");
}

#[test]
fn the_server_and_the_init_job_run_as_the_images_non_root_user_with_nothing_extra() {
    let deployment = deployment();
    let pod = &deployment["spec"]["template"]["spec"];
    assert_locked_down("deployment", pod, &server_container());
    for init in pod["initContainers"].as_array().into_iter().flatten() {
        assert_locked_down("deployment init container", pod, init);
    }
    let job = init_job();
    let pod = &job["spec"]["template"]["spec"];
    assert_locked_down("init job", pod, &pod["containers"][0]);
}

#[test]
fn the_termination_grace_period_covers_the_pre_stop_pause_and_the_drain_time() {
    let pod = deployment()["spec"]["template"]["spec"].clone();
    let grace = Duration::from_secs(pod["terminationGracePeriodSeconds"].as_u64().unwrap());
    let pre_stop = &server_container()["lifecycle"]["preStop"]["exec"]["command"];
    let pause = match pre_stop.as_array().map(Vec::as_slice) {
        Some([cmd, secs]) if cmd == "sleep" => {
            Duration::from_secs(secs.as_str().unwrap().parse().unwrap())
        }
        None => Duration::ZERO,
        other => panic!("preStop is `sleep N` or absent, got {other:?}"),
    };
    // After SIGTERM, ledger-server answers the requests in flight (each bounded by the request
    // timeout), then lets the last batch finish its claim (the commit protocol's claim
    // deadline, plus the store call under way) and write out its objects and SEQ# items (one
    // store call each, each bounded by the request timeout).
    let timeout = Duration::from_millis(
        configmap()["ELEANOR_LEDGER_REQUEST_TIMEOUT_MS"]
            .parse()
            .unwrap(),
    );
    let claim = eleanor_ledger::ledger::Options::default().claim_deadline;
    let drain = timeout + claim + 2 * timeout;
    assert_eq!(
        drain,
        Duration::from_secs(40),
        "the figure deployment.yaml states"
    );
    assert!(
        grace >= pause + drain,
        "terminationGracePeriodSeconds {grace:?} < preStop {pause:?} + drain {drain:?}"
    );
}

#[test]
fn resources_are_the_runbooks_vertical_scaling_figures() {
    let resources = server_container()["resources"].clone();
    assert_eq!(cpu_cores(&resources["requests"]["cpu"]), 0.5);
    assert_eq!(bytes(&resources["requests"]["memory"]), 1 << 30);
    assert_eq!(cpu_cores(&resources["limits"]["cpu"]), 2.0);
    assert_eq!(bytes(&resources["limits"]["memory"]), 4 << 30);
}

/// The runbook's "HPA Configuration", verbatim.
const RUNBOOK_HPA: &str = "
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: eleanor-v8-hpa
  namespace: eleanor-v8
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: eleanor-v8
  minReplicas: 2
  maxReplicas: 20
  metrics:
  - type: Resource
    resource:
      name: cpu
      target:
        type: Utilization
        averageUtilization: 70
  - type: Resource
    resource:
      name: memory
      target:
        type: Utilization
        averageUtilization: 80
";

#[test]
fn the_hpa_is_the_runbooks_two_to_twenty_replicas_at_cpu_70_and_memory_80() {
    let mut hpa = find("HorizontalPodAutoscaler", "eleanor-v8-hpa");
    hpa["metadata"].as_object_mut().unwrap().remove("labels");
    let runbook: Value = serde_norway::from_str(RUNBOOK_HPA).unwrap();
    assert_eq!(hpa, runbook);
}

#[test]
fn the_configmap_holds_every_setting_the_code_reads_and_no_emulator_endpoint() {
    let declared = settings_declared_in_source();
    // The source scan and the parsers agree on what the settings are.
    let mut parsed: BTreeSet<String> = env_flags(&ServerArgs::command()).into_keys().collect();
    parsed.extend(env_flags(&InitArgs::command()).into_keys());
    assert_eq!(
        declared, parsed,
        "settings in src/ vs. the binaries' parsers"
    );

    let expected: BTreeSet<String> = declared
        .iter()
        .filter(|name| !NOT_IN_PRODUCTION.contains(&name.as_str()))
        .cloned()
        .collect();
    let present: BTreeSet<String> = configmap().into_keys().collect();
    let missing: Vec<&String> = expected.difference(&present).collect();
    let unknown: Vec<&String> = present.difference(&expected).collect();
    assert!(
        missing.is_empty() && unknown.is_empty(),
        "k8s/configmap.yaml: missing {missing:?}, not settings of the server {unknown:?}"
    );

    // The runbook's "Audit Ledger Index" values.
    let config = configmap();
    assert_eq!(config["ELEANOR_LEDGER_BACKEND"], "aws");
    assert_eq!(
        config["ELEANOR_LEDGER_DDB_TABLE"],
        "eleanor-stone-tablet-ledger-index"
    );
    assert_eq!(config["ELEANOR_LEDGER_DDB_REGION"], "us-east-1");
    assert_eq!(config["ELEANOR_LEDGER_DDB_LEDGER_ID"], "default");
    assert_eq!(config["ELEANOR_LEDGER_LOG_FORMAT"], "json");
}

/// Files like the ones the pod's volumes hold, for the settings that name files.
fn stand_in_files(dir: &Path) -> BTreeMap<String, PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    // The Secret volume's file is group-readable, so it holds public keys only (an HS256
    // secret needs mode 0600), here mode 0440 as the kubelet leaves it.
    let jwt = dir.join("keys.json");
    let pem = fs::read_to_string("tests/data/auth/ed25519-public.pem").unwrap();
    fs::write(
        &jwt,
        serde_json::json!({"keys": [{"kid": "k", "alg": "EdDSA", "public_key_pem": pem}]})
            .to_string(),
    )
    .unwrap();
    fs::set_permissions(&jwt, fs::Permissions::from_mode(0o440)).unwrap();
    // What `ledger-init --gen-key` writes: a 32-byte seed, here as hex, mode 0600.
    let signing = dir.join("ed25519.key");
    fs::write(&signing, "11".repeat(32)).unwrap();
    fs::set_permissions(&signing, fs::Permissions::from_mode(0o600)).unwrap();
    BTreeMap::from([
        ("ELEANOR_LEDGER_JWT_KEYS_FILE".to_owned(), jwt),
        ("ELEANOR_LEDGER_SIGNING_KEY_FILE".to_owned(), signing),
    ])
}

#[test]
fn the_configmap_values_pass_the_servers_and_init_validation() {
    let dir = tempfile::tempdir().unwrap();
    let files = stand_in_files(dir.path());
    let argv = argv_from_configmap("ledger-server", &ServerArgs::command(), &files);
    let args = ServerArgs::try_parse_from(&argv).unwrap_or_else(|e| panic!("{argv:?}: {e}"));
    let config = args
        .into_config()
        .unwrap_or_else(|e| panic!("k8s/configmap.yaml is refused by ledger-server: {e}"));
    // The keys file as the pod's Secret volume holds it (group-readable) loads.
    if let Some((keys, leeway)) = &config.auth {
        eleanor_ledger::http::auth::Authenticator::load(keys, *leeway)
            .unwrap_or_else(|e| panic!("the keys file of the pod is refused: {e}"));
    }
    let mut argv = argv_from_configmap("ledger-init", &InitArgs::command(), &files);
    argv.extend(job_command().into_iter().skip(1));
    let args = InitArgs::try_parse_from(&argv).unwrap_or_else(|e| panic!("{argv:?}: {e}"));
    args.storage
        .backend_config(Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("k8s/configmap.yaml is refused by ledger-init: {e}"));
    args.storage.default_ledger().unwrap();
}

#[test]
fn the_server_and_the_init_job_take_their_settings_from_the_configmap() {
    let deployment = deployment();
    let job = init_job();
    for container in [
        &server_container(),
        &job["spec"]["template"]["spec"]["containers"][0],
    ] {
        assert_eq!(
            container["envFrom"],
            json!([{ "configMapRef": { "name": CONFIGMAP } }]),
            "{}",
            container["name"]
        );
        // The ConfigMap is the one place settings live.
        assert!(container.get("env").is_none());
    }
    // Every file a setting names is on a volume of the server's pod: the JWT keys straight
    // from a Secret, as a directory (a subPath mount never sees a rotated Secret), the signing
    // key from a Secret through the init container that gives it mode 0600.
    let pod = deployment["spec"]["template"]["spec"].clone();
    let volume_of = |container: &Value, file: &str| -> Value {
        let file = PathBuf::from(file);
        let mounts = container["volumeMounts"].as_array().unwrap();
        let mount = mounts
            .iter()
            .find(|m| file.starts_with(m["mountPath"].as_str().unwrap()))
            .unwrap_or_else(|| {
                panic!(
                    "{} is on no volume of {}",
                    file.display(),
                    container["name"]
                )
            });
        assert!(mount.get("subPath").is_none(), "{mount}");
        pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == mount["name"])
            .unwrap()
            .clone()
    };
    let config = configmap();
    let files: Vec<&String> = config.keys().filter(|k| k.ends_with("_FILE")).collect();
    assert_eq!(
        files,
        [
            "ELEANOR_LEDGER_JWT_KEYS_FILE",
            "ELEANOR_LEDGER_SIGNING_KEY_FILE"
        ],
        "a new *_FILE setting: mount its file in deployment.yaml and add it here"
    );
    let jwt = volume_of(&server_container(), &config["ELEANOR_LEDGER_JWT_KEYS_FILE"]);
    assert!(jwt["secret"]["secretName"].is_string(), "{jwt}");

    let key_file = &config["ELEANOR_LEDGER_SIGNING_KEY_FILE"];
    let signing = volume_of(&server_container(), key_file);
    assert_eq!(signing["emptyDir"]["medium"], "Memory", "{signing}");
    let copier = pod["initContainers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["command"].as_array().unwrap().last().unwrap() == key_file.as_str())
        .expect("an init container installs the signing key")
        .clone();
    let command: Vec<&str> = copier["command"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert_eq!(command[..3], ["install", "-m", "0600"]);
    assert_eq!(volume_of(&copier, key_file)["name"], signing["name"]);
    assert!(volume_of(&copier, command[3])["secret"]["secretName"].is_string());
}

#[test]
fn with_metrics_behind_auth_the_servicemonitor_sends_a_bearer_token_from_a_secret() {
    let config = configmap();
    let protected = config["ELEANOR_LEDGER_AUTH"] == "jwt"
        && config
            .get("ELEANOR_LEDGER_METRICS_AUTH")
            .is_none_or(|v| v == "true");
    let monitor = find("ServiceMonitor", APP);
    for endpoint in monitor["spec"]["endpoints"].as_array().unwrap() {
        let authorization = &endpoint["authorization"];
        if protected {
            assert_eq!(authorization["type"], "Bearer", "{endpoint}");
            assert!(
                authorization["credentials"]["name"].is_string()
                    && authorization["credentials"]["key"].is_string(),
                "the token comes from a Secret: {endpoint}"
            );
        } else {
            assert!(authorization.is_null(), "{endpoint}");
        }
    }
}

fn job_command() -> Vec<String> {
    let container = init_job()["spec"]["template"]["spec"]["containers"][0].clone();
    let mut argv: Vec<String> = Vec::new();
    for part in ["command", "args"] {
        for item in container[part].as_array().into_iter().flatten() {
            argv.push(item.as_str().unwrap().to_owned());
        }
    }
    argv
}

#[test]
fn the_init_job_runs_ledger_init_wait_init_meta_and_stops_on_unfixable_errors() {
    let argv = job_command();
    let bin = Path::new(&argv[0]).file_name().unwrap().to_str().unwrap();
    assert_eq!(bin, "ledger-init");
    assert_eq!(argv[1..], ["--wait", "--init-meta"]);
    assert!(cargo_manifest().bins.contains(bin));
    assert!(
        dockerfile_binaries().contains(&argv[0]),
        "{} is not where the Dockerfile puts it",
        argv[0]
    );
    let job = init_job();
    let pod = &job["spec"]["template"]["spec"];
    assert_eq!(pod["restartPolicy"], "Never");
    assert_eq!(pod["serviceAccountName"], "eleanor-v8-init");
    // Exit codes 2 (configuration) and 3 (unusable table or bucket) cannot be fixed by a retry.
    let rules = &job["spec"]["podFailurePolicy"]["rules"];
    assert_eq!(rules[0]["action"], "FailJob");
    assert_eq!(rules[0]["onExitCodes"]["values"], json!([2, 3]));
}

#[test]
fn service_accounts_carry_iam_roles_for_the_migrations_policies() {
    let cases = [
        (
            APP,
            deployment(),
            vec!["migrations/iam-runtime-policy.json"],
        ),
        (
            "eleanor-v8-init",
            init_job(),
            vec![
                "migrations/iam-runtime-policy.json",
                "migrations/iam-init-policy.json",
            ],
        ),
    ];
    for (name, workload, policies) in cases {
        assert_eq!(
            workload["spec"]["template"]["spec"]["serviceAccountName"],
            name
        );
        let sa = find("ServiceAccount", name);
        let annotations = &sa["metadata"]["annotations"];
        let role = annotations["eks.amazonaws.com/role-arn"].as_str().unwrap();
        assert!(role.starts_with("arn:aws:iam::ACCOUNT_ID:role/"), "{role}");
        let named: Vec<&str> = annotations["eleanor-ledger/iam-policies"]
            .as_str()
            .unwrap()
            .split_whitespace()
            .collect();
        assert_eq!(named, policies, "{name}");
        for policy in named {
            let document: Value = serde_json::from_str(&read(policy)).unwrap();
            assert_eq!(document["Version"], "2012-10-17", "{policy}");
        }
    }
    assert_ne!(
        find("ServiceAccount", APP)["metadata"]["annotations"]["eks.amazonaws.com/role-arn"],
        find("ServiceAccount", "eleanor-v8-init")["metadata"]["annotations"]["eks.amazonaws.com/role-arn"],
        "the server must not run with the init role's extra rights"
    );
}

#[test]
fn images_are_this_crates_build_and_commands_are_its_binaries() {
    let cargo = cargo_manifest();
    let image = format!("eleanor-ledger:{}", cargo.version);
    assert_eq!(server_container()["image"], image.as_str());
    assert_eq!(
        init_job()["spec"]["template"]["spec"]["containers"][0]["image"],
        image.as_str()
    );
    // The server container runs the image's entrypoint, ledger-server.
    assert!(server_container().get("command").is_none());
    assert!(cargo.bins.contains("ledger-server"));
}

// ---------------------------------------------------------------------------------------------
// Dockerfile
// ---------------------------------------------------------------------------------------------

/// One instruction, continuation lines joined; `stage` counts `FROM`s (1 for the first stage).
#[derive(Debug, Clone)]
struct Instruction {
    stage: usize,
    keyword: String,
    args: String,
}

fn dockerfile() -> Vec<Instruction> {
    let text = read("Dockerfile");
    let mut instructions = Vec::new();
    let mut stage = 0;
    let mut pending = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if pending.is_empty() && (trimmed.is_empty() || trimmed.starts_with('#')) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(head) => {
                pending.push_str(head);
                pending.push(' ');
                continue;
            }
            None => pending.push_str(trimmed),
        }
        let whole = std::mem::take(&mut pending);
        let (keyword, args) = whole
            .split_once(char::is_whitespace)
            .unwrap_or((&whole, ""));
        let keyword = keyword.to_ascii_uppercase();
        if keyword == "FROM" {
            stage += 1;
        }
        instructions.push(Instruction {
            stage,
            keyword,
            args: args.trim().to_owned(),
        });
    }
    instructions
}

fn in_final_stage(keyword: &str) -> Vec<String> {
    let all = dockerfile();
    let last = all.iter().map(|i| i.stage).max().unwrap();
    all.into_iter()
        .filter(|i| i.stage == last && i.keyword == keyword)
        .map(|i| i.args)
        .collect()
}

fn dockerfile_env() -> BTreeMap<String, String> {
    in_final_stage("ENV")
        .iter()
        .flat_map(|args| {
            args.split_whitespace()
                .map(|pair| {
                    let (k, v) = pair.split_once('=').expect("ENV uses key=value");
                    (k.to_owned(), v.trim_matches('"').to_owned())
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The numeric uid of the final stage's `USER`.
fn dockerfile_user() -> u64 {
    let users = in_final_stage("USER");
    assert_eq!(users.len(), 1, "the runtime stage sets USER once");
    let uid = users[0].split(':').next().unwrap();
    uid.parse()
        .unwrap_or_else(|_| panic!("USER must be numeric (runAsNonRoot checks it), got {uid}"))
}

/// Paths of the binaries the image holds: every `cp target/release/NAME` of the build stage,
/// under the directory the runtime stage copies `/out/` to.
fn dockerfile_binaries() -> BTreeSet<String> {
    let all = dockerfile();
    let build_commands: String = all
        .iter()
        .filter(|i| i.stage == 1 && i.keyword == "RUN")
        .map(|i| i.args.clone())
        .collect::<Vec<_>>()
        .join(" ");
    let copy = in_final_stage("COPY")
        .into_iter()
        .find(|args| args.starts_with("--from=build"))
        .expect("the runtime stage copies from the build stage");
    let destination = copy
        .split_whitespace()
        .last()
        .unwrap()
        .trim_end_matches('/');
    build_commands
        .split_whitespace()
        .filter_map(|word| word.strip_prefix("target/release/"))
        .map(|bin| format!("{destination}/{bin}"))
        .collect()
}

#[test]
fn the_dockerfile_builds_in_one_stage_and_runs_in_a_slim_one() {
    let all = dockerfile();
    let froms: Vec<&Instruction> = all.iter().filter(|i| i.keyword == "FROM").collect();
    assert_eq!(froms.len(), 2, "a build stage and a runtime stage");
    let build = &froms[0].args;
    assert!(
        build.starts_with("rust:") && build.ends_with(" AS build"),
        "{build}"
    );
    let rust_version = read("Cargo.toml")
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = "))
        .unwrap()
        .trim_matches('"')
        .to_owned();
    assert!(
        build.starts_with(&format!("rust:{rust_version}")),
        "the build image is the crate's rust-version {rust_version}: {build}"
    );
    let runtime = &froms[1].args;
    assert!(
        runtime.contains("-slim") || runtime.contains("distroless"),
        "the runtime image is slim: {runtime}"
    );
    assert!(
        !in_final_stage("COPY")
            .iter()
            .any(|c| c.contains("target") && !c.starts_with("--from=")),
        "the runtime stage copies binaries only from the build stage"
    );
    // Dependency caching: the registry and target directory are BuildKit cache mounts.
    let run = all
        .iter()
        .find(|i| i.stage == 1 && i.keyword == "RUN" && i.args.contains("cargo build"))
        .expect("the build stage runs cargo build");
    assert!(run.args.contains("--release") && run.args.contains("--locked"));
    assert!(
        run.args
            .contains("--mount=type=cache,target=/usr/local/cargo/registry")
    );
    // Everything Cargo.toml names must be in the build context copied in, or cargo refuses to
    // start (a [[bench]] whose file is missing fails `cargo build` too).
    let copied: Vec<String> = all
        .iter()
        .filter(|i| i.stage == 1 && i.keyword == "COPY")
        .flat_map(|i| {
            let words: Vec<&str> = i.args.split_whitespace().collect();
            words[..words.len() - 1]
                .iter()
                .map(|w| w.to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    for needed in cargo_manifest()
        .paths
        .iter()
        .chain(["Cargo.toml".to_owned(), "Cargo.lock".to_owned()].iter())
    {
        assert!(
            copied
                .iter()
                .any(|c| needed == c || needed.starts_with(&format!("{c}/"))),
            "the build stage does not copy {needed}"
        );
    }
}

#[test]
fn the_dockerfile_runs_as_a_numeric_non_root_user() {
    let uid = dockerfile_user();
    assert_ne!(uid, 0);
    let pod = deployment()["spec"]["template"]["spec"].clone();
    assert_eq!(pod["securityContext"]["runAsUser"].as_u64(), Some(uid));
}

#[test]
fn the_dockerfile_exposes_the_port_the_manifests_use_and_listens_on_it() {
    let exposed: Vec<u64> = in_final_stage("EXPOSE")
        .iter()
        .flat_map(|a| {
            a.split_whitespace()
                .map(|p| p.trim_end_matches("/tcp").parse::<u64>().unwrap())
                .collect::<Vec<_>>()
        })
        .collect();
    let port = resolve_port(&json!("http"), &server_container());
    assert_eq!(exposed, vec![port]);
    let listen = &dockerfile_env()["ELEANOR_LEDGER_LISTEN"];
    assert_eq!(listen, &format!("0.0.0.0:{port}"));
}

#[test]
fn the_dockerfile_health_check_is_exec_form_and_the_binary_probes_itself_without_curl() {
    let checks = in_final_stage("HEALTHCHECK");
    assert_eq!(checks.len(), 1);
    let command = checks[0]
        .split_once("CMD ")
        .map(|(_, c)| c.trim())
        .expect("HEALTHCHECK ... CMD");
    let argv: Vec<String> = serde_json::from_str(command)
        .unwrap_or_else(|e| panic!("not exec form (a JSON array): {command}: {e}"));
    assert_eq!(argv, ["/usr/local/bin/ledger-server", "--probe"]);
    assert!(
        dockerfile_binaries().contains(&argv[0]),
        "the probing binary {} is in the image",
        argv[0]
    );
    assert!(
        !in_final_stage("RUN").iter().any(|r| r.contains("curl")),
        "the runtime image has no curl"
    );
    // The probe reads the listen address from the image's environment.
    assert!(dockerfile_env().contains_key("ELEANOR_LEDGER_LISTEN"));
}

#[test]
fn the_docker_build_context_leaves_out_target_git_and_data_but_not_what_is_copied() {
    let ignore = read(".dockerignore");
    let patterns: Vec<&str> = ignore
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    for excluded in ["target/", ".git/", "data/"] {
        assert!(
            patterns.contains(&excluded),
            ".dockerignore lacks {excluded}"
        );
    }
    let copied: Vec<String> = dockerfile()
        .iter()
        .filter(|i| i.stage == 1 && i.keyword == "COPY")
        .flat_map(|i| {
            let words: Vec<&str> = i.args.split_whitespace().collect();
            words[..words.len() - 1]
                .iter()
                .map(|w| w.trim_end_matches('/').to_owned())
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(!copied.is_empty());
    for path in &copied {
        for pattern in &patterns {
            let p = pattern.trim_end_matches('/');
            assert!(
                !(p == path
                    || path.starts_with(&format!("{p}/"))
                    || (p == "*.md" && path.ends_with(".md"))),
                ".dockerignore pattern {pattern} hides {path}, which the Dockerfile copies"
            );
        }
    }
}

#[test]
fn the_dockerfile_entrypoint_is_ledger_server_and_every_binary_is_a_cargo_bin() {
    let entrypoints = in_final_stage("ENTRYPOINT");
    assert_eq!(entrypoints.len(), 1);
    let entrypoint: Vec<String> =
        serde_json::from_str(&entrypoints[0]).expect("ENTRYPOINT in exec (JSON) form");
    assert_eq!(entrypoint, vec!["/usr/local/bin/ledger-server"]);
    let binaries = dockerfile_binaries();
    assert!(binaries.contains(&entrypoint[0]));
    let names: BTreeSet<String> = binaries
        .iter()
        .map(|b| {
            Path::new(b)
                .file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(
        names,
        cargo_manifest().bins,
        "the image holds exactly Cargo.toml's [[bin]]s"
    );
    // `cargo build --bin X` for each binary copied.
    let build = dockerfile()
        .into_iter()
        .find(|i| i.args.contains("cargo build"))
        .unwrap();
    for name in &names {
        assert!(build.args.contains(&format!("--bin {name}")), "{name}");
    }
}

#[test]
fn the_dockerfile_data_volume_is_the_data_dir_and_belongs_to_the_user() {
    let volumes = in_final_stage("VOLUME");
    assert_eq!(volumes, vec![r#"["/data"]"#]);
    assert_eq!(dockerfile_env()["ELEANOR_LEDGER_DATA_DIR"], "/data");
    assert_eq!(configmap()["ELEANOR_LEDGER_DATA_DIR"], "/data");
    let uid = dockerfile_user();
    assert!(
        in_final_stage("RUN")
            .iter()
            .any(|r| r.contains(&format!("--uid {uid}")) && r.contains("chown ledger:ledger /data")),
        "the runtime stage creates user {uid} and gives it /data"
    );
}

// ---------------------------------------------------------------------------------------------
// Monitoring: alerts and dashboard
// ---------------------------------------------------------------------------------------------

/// PromQL aggregation operators, which may be followed by `by (...)` before their argument.
const AGGREGATIONS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
];

/// Metric names a PromQL expression selects (with the label names each selector matches on).
fn selectors(expr: &str) -> Vec<(String, Vec<String>)> {
    const KEYWORDS: &[&str] = &[
        "and",
        "or",
        "unless",
        "bool",
        "offset",
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "inf",
        "nan",
    ];
    let chars: Vec<char> = expr.chars().collect();
    let mut found = Vec::new();
    let mut i = 0;
    let mut skip_group = false;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' {
            i += 1;
            while i < chars.len() && chars[i] != c {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
        } else if c == '[' {
            while i < chars.len() && chars[i] != ']' {
                i += 1;
            }
            i += 1;
        } else if c.is_ascii_digit()
            || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit))
        {
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
            {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let mut j = i;
            while j < chars.len() && chars[j].is_whitespace() {
                j += 1;
            }
            let next = chars.get(j).copied();
            if skip_group {
                continue;
            }
            if matches!(
                word.as_str(),
                "by" | "without" | "on" | "ignoring" | "group_left" | "group_right"
            ) && next == Some('(')
            {
                skip_group = true;
                i = j + 1;
                continue;
            }
            // Functions, and aggregations whether their grouping comes first or last.
            let grouping_follows = chars[j..].starts_with(&['b', 'y'])
                || chars[j..].starts_with(&['w', 'i', 't', 'h', 'o', 'u', 't']);
            if KEYWORDS.contains(&word.as_str())
                || next == Some('(')
                || (AGGREGATIONS.contains(&word.as_str()) && grouping_follows)
            {
                continue;
            }
            let mut labels = Vec::new();
            if next == Some('{') {
                let mut close = j + 1;
                let mut quote = None;
                while close < chars.len() {
                    match (quote, chars[close]) {
                        (Some(_), '\\') => close += 1,
                        (Some(q), c) if c == q => quote = None,
                        (None, '"' | '\'') => quote = Some(chars[close]),
                        (None, '}') => break,
                        _ => {}
                    }
                    close += 1;
                }
                let inside: String = chars[j + 1..close].iter().collect();
                for matcher in split_matchers(&inside) {
                    let name: String = matcher
                        .trim()
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    if !name.is_empty() {
                        labels.push(name);
                    }
                }
                i = close + 1;
            }
            found.push((word, labels));
        } else if c == '{' {
            // A selector without a metric name: not used here.
            panic!("selector without a metric name in {expr}");
        } else {
            if c == ')' && skip_group {
                skip_group = false;
            }
            i += 1;
        }
    }
    found
}

/// Label matchers separated by commas outside quotes.
fn split_matchers(inside: &str) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut quoted = false;
    for c in inside.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                parts.last_mut().unwrap().push(c);
            }
            ',' if !quoted => parts.push(String::new()),
            _ => parts.last_mut().unwrap().push(c),
        }
    }
    parts
}

#[test]
fn the_promql_reader_finds_metrics_and_skips_functions_labels_and_keywords() {
    let found = selectors(
        r#"sum by (le) (rate(a_total{job="x", route!~"/h|{a}"}[5m])) / on (pod) group_left b > 0.8 or vector(0) and c"#,
    );
    let names: Vec<&str> = found.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["a_total", "b", "c"]);
    assert_eq!(found[0].1, ["job", "route"]);
}

/// What a running server exports: metric name (with `_bucket`, `_sum`, `_count` for
/// histograms) -> label names seen.
struct Exported(BTreeMap<String, BTreeSet<String>>);

/// Metrics the code declares that only the aws backend emits (an empty vector is not exported),
/// so the embedded server below cannot show them: each must still be in `src/` verbatim.
const AWS_ONLY: &[(&str, &str)] = &[("ledger_backend_write_units_total", "src/store/mod.rs")];

/// Starts the real service in-process over a temp dir, appends one record, and reads /metrics.
async fn exported_metrics() -> Exported {
    let data = tempfile::tempdir().unwrap();
    let config = ServerArgs::try_parse_from([
        "ledger-server",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        data.path().to_str().unwrap(),
    ])
    .unwrap()
    .into_config()
    .unwrap();
    let app = Application::build(config)
        .await
        .unwrap_or_else(|e| panic!("the app starts: {e}"));
    let base = format!("http://{}", app.local_addr());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until(async {
        let _ = stopped.await;
    }));
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let appended = client
        .post(format!("{base}/v1/ledgers/metrics-check/records"))
        .header("content-type", "application/json")
        .body(r#"{"actor":"k8s-manifests-test"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(appended.status(), 201);
    let verified = client
        .get(format!("{base}/v1/ledgers/metrics-check/verify"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        verified.status(),
        200,
        "a verification exports the ledger_verify_* gauges"
    );
    let health = client.get(format!("{base}/health")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let text = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    stop.send(()).unwrap();
    server.await.unwrap();

    let mut exported: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            let names = match kind {
                "histogram" => vec![
                    format!("{name}_bucket"),
                    format!("{name}_sum"),
                    format!("{name}_count"),
                ],
                "summary" => vec![
                    name.to_owned(),
                    format!("{name}_sum"),
                    format!("{name}_count"),
                ],
                _ => vec![name.to_owned()],
            };
            for n in names {
                exported.entry(n).or_default();
            }
        } else if !line.starts_with('#') && !line.is_empty() {
            let name: String = line
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            let labels = exported.entry(name.clone()).or_default();
            if let Some(open) = line.find('{') {
                let close = line.rfind('}').unwrap();
                for matcher in split_matchers(&line[open + 1..close]) {
                    if let Some((label, _)) = matcher.split_once('=') {
                        labels.insert(label.trim().to_owned());
                    }
                }
            }
        }
    }
    for (name, file) in AWS_ONLY {
        assert!(
            read(file).contains(&format!("\"{name}\"")),
            "{name} is no longer declared in {file}"
        );
        exported.entry((*name).to_owned()).or_default();
    }
    Exported(exported)
}

/// Labels Prometheus adds when it scrapes (target and ServiceMonitor labels).
const SCRAPE_LABELS: &[&str] = &["job", "namespace", "pod", "instance", "service"];

/// Metrics of other exporters the alerts compare with, and their labels: kube-state-metrics'
/// container limits.
const EXTERNAL: &[(&str, &[&str])] = &[(
    "kube_pod_container_resource_limits",
    &[
        "namespace",
        "pod",
        "container",
        "resource",
        "unit",
        "node",
        "uid",
    ],
)];

fn assert_uses_only_exported(exported: &Exported, context: &str, expr: &str) -> BTreeSet<String> {
    let found = selectors(expr);
    assert!(!found.is_empty(), "{context}: no metric in {expr}");
    let mut names = BTreeSet::new();
    for (name, labels) in found {
        if let Some((_, external)) = EXTERNAL.iter().find(|(n, _)| *n == name) {
            for label in &labels {
                assert!(
                    external.contains(&label.as_str()),
                    "{context}: {name} has no label {label}"
                );
            }
            names.insert(name);
            continue;
        }
        let known = exported
            .0
            .get(&name)
            .unwrap_or_else(|| panic!("{context}: {name} is not exported by ledger-server"));
        for label in labels {
            assert!(
                SCRAPE_LABELS.contains(&label.as_str())
                    || known.contains(&label)
                    || known.is_empty(),
                "{context}: {name} has no label {label} (it has {known:?})"
            );
        }
        names.insert(name);
    }
    names
}

fn rules() -> Vec<Value> {
    let rule_file = manifests()
        .into_iter()
        .find(|m| m.kind() == "PrometheusRule")
        .expect("k8s/monitoring has a PrometheusRule");
    assert_eq!(rule_file.file, "k8s/monitoring/prometheus-rules.yaml");
    rule_file.doc["spec"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap().clone())
        .collect()
}

fn alert(name: &str) -> (String, Option<String>, String) {
    let rules = rules();
    let rule = rules
        .iter()
        .find(|r| r["alert"] == name)
        .unwrap_or_else(|| panic!("no alert {name}"));
    let expr: String = rule["expr"]
        .as_str()
        .unwrap()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    (
        expr,
        rule["for"].as_str().map(str::to_owned),
        rule["labels"]["severity"].as_str().unwrap().to_owned(),
    )
}

#[tokio::test]
async fn every_alert_and_panel_uses_only_metrics_a_running_server_exports() {
    let exported = exported_metrics().await;
    let mut used = BTreeSet::new();
    for rule in rules() {
        let name = rule["alert"].as_str().unwrap();
        used.extend(assert_uses_only_exported(
            &exported,
            name,
            rule["expr"].as_str().unwrap(),
        ));
    }
    let dashboard: Value = serde_json::from_str(&read("k8s/monitoring/grafana-dashboard.json"))
        .expect("the dashboard is JSON");
    for panel in dashboard["panels"].as_array().unwrap() {
        let title = panel["title"].as_str().unwrap();
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "panel {title} has no query");
        for target in targets {
            used.extend(assert_uses_only_exported(
                &exported,
                title,
                target["expr"].as_str().unwrap(),
            ));
        }
    }
    for needed in [
        "eleanor_requests_total",
        "kube_pod_container_resource_limits",
        "ledger_verify_failing_ledgers",
        "ledger_verify_last_timestamp_seconds",
        "http_request_duration_seconds_bucket",
        "circuit_breaker_state",
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
        "ledger_integrity_errors_total",
        "ledger_commit_conflicts_total",
        "ledger_roll_forwards_total",
        "ledger_append_requests_total",
        "ledger_append_duration_seconds_bucket",
        "ledger_batch_size_bucket",
        "ledger_backend_requests_total",
    ] {
        assert!(used.contains(needed), "no alert or panel uses {needed}");
    }
}

#[test]
fn the_alerts_carry_the_runbooks_thresholds() {
    // (alert, how the expression ends, for, severity)
    let runbook = [
        ("EleanorLedgerHighErrorRate", "> 0.01", "5m"),
        ("EleanorLedgerHighLatencyP95", "> 2", "5m"),
        ("EleanorLedgerHighLatencyP99", "> 5", "5m"),
        ("EleanorLedgerCircuitOpen", "> 0", "5m"),
        ("EleanorLedgerHighMemory", "> 0.85", "10m"),
        ("EleanorLedgerHighCpu", "> 0.8", "10m"),
    ];
    for (name, threshold, duration) in runbook {
        let (expr, for_, _) = alert(name);
        assert!(expr.ends_with(threshold), "{name}: {expr}");
        assert_eq!(for_.as_deref(), Some(duration), "{name}");
    }
    let (error_rate, _, _) = alert("EleanorLedgerHighErrorRate");
    assert!(
        error_rate.contains(r#"outcome="error""#) && error_rate.contains("eleanor_requests_total"),
        "{error_rate}"
    );
    assert_eq!(
        error_rate
            .matches(r#"route!~"/health|/livez|/metrics""#)
            .count(),
        2,
        "probes and scrapes are left out of both sides: {error_rate}"
    );
    for (name, quantile) in [
        ("EleanorLedgerHighLatencyP95", "0.95"),
        ("EleanorLedgerHighLatencyP99", "0.99"),
    ] {
        let (expr, _, _) = alert(name);
        assert!(expr.starts_with(&format!("histogram_quantile({quantile},")));
        assert!(expr.contains("http_request_duration_seconds_bucket"));
    }
    // Memory and CPU are measured against the server container's limits as the cluster has
    // them, never a figure copied from deployment.yaml.
    let container = server_container()["name"].as_str().unwrap().to_owned();
    for (name, resource) in [
        ("EleanorLedgerHighMemory", "memory"),
        ("EleanorLedgerHighCpu", "cpu"),
    ] {
        let (expr, _, _) = alert(name);
        assert!(
            expr.contains(&format!(
                r#"/ on (namespace, pod) max by (namespace, pod) (kube_pod_container_resource_limits{{namespace="{NAMESPACE}", container="{container}", resource="{resource}"}})"#
            )),
            "{name} divides by the container's {resource} limit: {expr}"
        );
        assert!(
            !expr.contains("4294967296") && !expr.contains("/ 2 "),
            "{name}: {expr}"
        );
    }
}

#[test]
fn the_ledger_alerts_page_on_integrity_and_warn_on_contention_and_roll_forwards() {
    let (expr, for_, severity) = alert("EleanorLedgerIntegrityError");
    assert!(expr.contains("ledger_integrity_errors_total") && expr.ends_with("> 0"));
    assert_eq!((for_, severity.as_str()), (None, "critical"), "at once");
    let (expr, _, severity) = alert("EleanorLedgerCommitConflictsHigh");
    assert!(expr.contains("ledger_commit_conflicts_total"));
    assert_eq!(severity, "warning");
    let (expr, _, severity) = alert("EleanorLedgerRollForwards");
    assert!(expr.contains("ledger_roll_forwards_total"));
    assert_eq!(severity, "warning");
}

#[test]
fn every_alert_is_explained_in_the_operations_runbook() {
    let runbook = read("docs/OPERATIONS.md");
    for rule in rules() {
        let name = rule["alert"].as_str().unwrap();
        assert!(
            runbook.contains(name),
            "docs/OPERATIONS.md does not explain {name}"
        );
        assert!(rule["annotations"]["summary"].is_string(), "{name}");
    }
}

#[test]
fn the_dashboard_has_the_panels_operators_need() {
    let dashboard: Value =
        serde_json::from_str(&read("k8s/monitoring/grafana-dashboard.json")).unwrap();
    let panels = dashboard["panels"].as_array().unwrap();
    let exprs = |title: &str| -> String {
        let panel = panels
            .iter()
            .find(|p| p["title"] == title)
            .unwrap_or_else(|| panic!("no panel {title}"));
        panel["targets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["expr"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert!(
        exprs("Appends/s by outcome")
            .contains("sum by (outcome) (rate(ledger_append_requests_total")
    );
    let latency = exprs("Append latency p50 / p95 / p99");
    for q in ["0.5", "0.95", "0.99"] {
        assert!(
            latency.contains(&format!("histogram_quantile({q}, ")),
            "{q}"
        );
    }
    assert!(exprs("Batch size (records per committed batch)").contains("ledger_batch_size"));
    let per_record = exprs("Backend requests per appended record");
    assert!(per_record.contains("rate(ledger_backend_requests_total"));
    assert!(per_record.contains(
        r#"rate(ledger_append_requests_total{job="eleanor-v8", outcome=~"created|committed"}"#
    ));
    assert!(exprs("Circuit breakers").contains("circuit_breaker_state"));
    assert!(exprs("Integrity errors").contains("ledger_integrity_errors_total"));
    let ids: BTreeSet<u64> = panels.iter().map(|p| p["id"].as_u64().unwrap()).collect();
    assert_eq!(ids.len(), panels.len(), "panel ids are unique");
}

/// The `promtool test rules` file (run by scripts/test.sh): every alert has a case where it
/// fires, and the test file loads the rule file scripts/test.sh extracts beside it.
#[test]
fn every_alert_has_a_promtool_test_in_which_it_fires() {
    let tests: Value =
        serde_norway::from_str(&read("tests/promtool/prometheus-rules.test.yaml")).unwrap();
    assert_eq!(tests["rule_files"], json!(["prometheus-rules.yaml"]));
    let mut fired = BTreeSet::new();
    let mut quiet = BTreeSet::new();
    for case in tests["tests"].as_array().unwrap() {
        for check in case["alert_rule_test"].as_array().unwrap() {
            let name = check["alertname"].as_str().unwrap().to_owned();
            if check["exp_alerts"]
                .as_array()
                .is_some_and(|a| !a.is_empty())
            {
                fired.insert(name);
            } else {
                quiet.insert(name);
            }
        }
    }
    for rule in rules() {
        let name = rule["alert"].as_str().unwrap();
        assert!(fired.contains(name), "no promtool test makes {name} fire");
    }
    for name in [
        "EleanorLedgerHighErrorRate",
        "EleanorLedgerHighMemory",
        "EleanorLedgerVerificationMissing",
    ] {
        assert!(quiet.contains(name), "no promtool test keeps {name} quiet");
    }
    let script = read("scripts/test.sh");
    assert!(
        script.contains("promtool test rules"),
        "scripts/test.sh runs the alert tests"
    );
}

#[test]
fn the_dashboard_imports_with_a_data_source_input_and_shows_zero_rather_than_no_data() {
    let text = read("k8s/monitoring/grafana-dashboard.json");
    let dashboard: Value = serde_json::from_str(&text).unwrap();
    let inputs = dashboard["__inputs"]
        .as_array()
        .expect("__inputs for import");
    assert_eq!(inputs.len(), 1);
    assert_eq!(inputs[0]["type"], "datasource");
    assert_eq!(inputs[0]["pluginId"], "prometheus");
    let input = format!("${{{}}}", inputs[0]["name"].as_str().unwrap());
    let variable = dashboard["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["type"] == "datasource")
        .expect("a data-source variable");
    assert_eq!(
        variable["current"]["value"], input,
        "the import's choice becomes the variable's value"
    );
    let panels = dashboard["panels"].as_array().unwrap();
    for panel in panels {
        let uid = panel["datasource"]["uid"].as_str().unwrap();
        assert!(
            uid == "${datasource}" || uid == input,
            "{}: {uid}",
            panel["title"]
        );
    }
    let panel = |title: &str| {
        panels
            .iter()
            .find(|p| p["title"] == title)
            .unwrap_or_else(|| panic!("no panel {title}"))
            .clone()
    };
    // Counters that are absent until the first event show 0, not "No data".
    for title in [
        "Integrity errors",
        "Commit conflicts and roll-forwards",
        "HTTP 5xx share",
    ] {
        let p = panel(title);
        for target in p["targets"].as_array().unwrap() {
            assert!(
                target["expr"].as_str().unwrap().contains("or vector(0)"),
                "{title}: {}",
                target["expr"]
            );
        }
        assert_eq!(p["fieldConfig"]["defaults"]["noValue"], "0", "{title}");
    }
    let share = panel("HTTP 5xx share")["targets"][0]["expr"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        share.contains(r#"route!~"/health|/livez|/metrics""#)
            && share.contains(r#"outcome="error""#),
        "the panel shows what the alert measures: {share}"
    );
    // The batch-size quantile never reads below one record (the first bucket is le=1).
    let batch = panel("Batch size (records per committed batch)");
    let quantiles: Vec<&str> = batch["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["expr"].as_str().unwrap())
        .filter(|e| e.contains("histogram_quantile"))
        .collect();
    assert!(!quantiles.is_empty());
    for q in quantiles {
        assert!(
            q.starts_with("clamp_min(histogram_quantile(") && q.ends_with(", 1)"),
            "{q}"
        );
    }
}

#[test]
fn the_network_policy_admits_only_the_ingress_controller_and_prometheus_on_the_server_port() {
    let policy = find("NetworkPolicy", APP);
    let pod_labels = &deployment()["spec"]["template"]["metadata"]["labels"];
    assert!(labels_match(
        &policy["spec"]["podSelector"]["matchLabels"],
        pod_labels
    ));
    assert_eq!(policy["spec"]["policyTypes"], json!(["Ingress"]));
    let port = resolve_port(&json!("http"), &server_container());
    let rules = policy["spec"]["ingress"].as_array().unwrap();
    assert_eq!(rules.len(), 2, "the ingress controller and Prometheus");
    let mut sources = BTreeSet::new();
    for rule in rules {
        let ports = rule["ports"].as_array().expect("every rule names its port");
        assert_eq!(ports.len(), 1, "{rule}");
        assert_eq!(ports[0]["port"].as_u64(), Some(port), "{rule}");
        assert_eq!(ports[0]["protocol"], "TCP");
        let from = rule["from"].as_array().expect("no rule admits everyone");
        assert_eq!(from.len(), 1, "{rule}");
        // Both selectors in one entry: those pods in that namespace (not "or").
        let namespace = from[0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
            .as_str()
            .expect("a namespace by name");
        let pods = from[0]["podSelector"]["matchLabels"]["app.kubernetes.io/name"]
            .as_str()
            .expect("pods by name");
        assert!(from[0].get("ipBlock").is_none());
        sources.insert((namespace.to_owned(), pods.to_owned()));
    }
    assert_eq!(
        sources,
        BTreeSet::from([
            ("ingress-nginx".to_owned(), "ingress-nginx".to_owned()),
            ("monitoring".to_owned(), "prometheus".to_owned()),
        ])
    );
    let runbook = read("docs/OPERATIONS.md");
    assert!(runbook.contains("k8s/networkpolicy.yaml"));
}

#[test]
fn the_service_monitor_and_rules_carry_the_label_kube_prometheus_stack_selects_and_it_is_documented()
 {
    let runbook = read("docs/OPERATIONS.md");
    for kind in ["ServiceMonitor", "PrometheusRule"] {
        let object = find(kind, APP);
        let release = object["metadata"]["labels"]["release"]
            .as_str()
            .unwrap_or_else(|| panic!("{kind} has no release label"));
        assert!(
            runbook.contains(&format!("`release: {release}`")),
            "docs/OPERATIONS.md explains the {kind}'s release label"
        );
    }
    for value in [
        "serviceMonitorSelectorNilUsesHelmValues",
        "ruleSelectorNilUsesHelmValues",
    ] {
        assert!(runbook.contains(value), "docs/OPERATIONS.md names {value}");
    }
}
