//! The worker Pod of one leased attempt, built purely from the [`Launch`] and the operator's
//! configuration: deterministic name, owner reference, labels, the attempt's identity and
//! fence, the catalog URL from a Secret, store settings, resources, deadline, and a locked-down
//! security context (non-root, read-only root filesystem, no capabilities, RuntimeDefault
//! seccomp, writable `emptyDir`s only for `/tmp` and the input cache).

use crate::decide::PodAttempt;
use crate::names;
use duckmesh_scheduler::Launch;
use k8s_openapi::api::core::v1::{
    Capabilities, Container, EmptyDirVolumeSource, EnvFromSource, EnvVar, EnvVarSource, ObjectFieldSelector, Pod,
    PodSecurityContext, PodSpec, ResourceRequirements, SeccompProfile, SecretEnvSource, SecretKeySelector,
    SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use std::collections::BTreeMap;

/// Name of the worker container.
pub const WORKER_CONTAINER: &str = "worker";
/// Where the writable scratch volume is mounted (`TMPDIR`, DuckDB spill, output files).
pub const SCRATCH_DIR: &str = "/tmp";
/// Where the input cache volume is mounted.
pub const CACHE_DIR: &str = "/var/cache/duckmesh";
/// The smallest margin of a worker pod's deadline over its task's timeout.
pub const POD_DEADLINE_MIN_MARGIN_SECONDS: i64 = 30;

/// The worker pod's `activeDeadlineSeconds` for a task timeout: the timeout plus a margin of
/// 10 % (at least [`POD_DEADLINE_MIN_MARGIN_SECONDS`]). The worker enforces the timeout
/// itself and records it with its own code (`task_timeout`); the pod's clock starts earlier
/// (scheduling, image pull, start-up), so without the margin the kubelet's deadline would
/// fire first and the attempt would end as a killed pod instead. The deadline remains the
/// backstop for a worker that cannot stop itself.
pub fn pod_deadline_seconds(timeout_seconds: u32) -> i64 {
    let timeout = i64::from(timeout_seconds);
    timeout + ((timeout + 9) / 10).max(POD_DEADLINE_MIN_MARGIN_SECONDS)
}

/// What every worker pod gets from the operator's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerPodConfig {
    /// The `duckmesh` image (the same binary runs `worker`).
    pub image: String,
    /// `imagePullPolicy`, when set.
    pub image_pull_policy: Option<String>,
    /// The service account worker pods run as (none: the namespace's default).
    pub service_account: Option<String>,
    /// The Secret (in the task's namespace) and key holding the catalog URL.
    pub database_secret: SecretKey,
    /// A Secret whose keys all become environment variables of the worker (object store
    /// credentials such as `AWS_ACCESS_KEY_ID`), if any.
    pub env_secret: Option<String>,
    /// Plain settings passed to every worker (object store bucket, endpoint, region, worker
    /// knobs), typically copied from the operator's own environment by [`forwarded_env`].
    pub env: Vec<(String, String)>,
    /// Size limit of the scratch and cache volumes (e.g. `10Gi`), if any.
    pub scratch_size_limit: Option<String>,
}

/// A key of a Secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretKey {
    /// The Secret's name.
    pub name: String,
    /// The key.
    pub key: String,
}

/// Prefixes of the operator's environment variables that are handed on to workers as plain
/// values: store settings, worker and catalog knobs, trace export.
pub const FORWARDED_PREFIXES: &[&str] = &[
    "DUCKMESH_S3_",
    "DUCKMESH_STORAGE_",
    "DUCKMESH_LOCAL_STORE_ROOT",
    "DUCKMESH_TASK_",
    "DUCKMESH_HEARTBEAT_SECONDS",
    "DUCKMESH_WORKER_",
    "DUCKMESH_LOG",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_ENDPOINT_URL",
    "OTEL_",
];

/// Words that mark a variable as a credential: never copied into a pod spec in plain text
/// (put credentials into the Secret named by `--worker-env-secret` instead).
const SECRET_WORDS: &[&str] = &["SECRET", "PASSWORD", "TOKEN", "CREDENTIAL", "ACCESS_KEY", "DATABASE_URL", "HEADERS"];

/// The variables of `vars` (an environment) that workers should get, sorted by name: those
/// with a [`FORWARDED_PREFIXES`] prefix that do not look like credentials.
pub fn forwarded_env(vars: impl IntoIterator<Item = (String, String)>) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = vars
        .into_iter()
        .filter(|(name, _)| FORWARDED_PREFIXES.iter().any(|p| name.starts_with(p)))
        .filter(|(name, _)| !SECRET_WORDS.iter().any(|w| name.contains(w)))
        .collect();
    env.sort();
    env
}

/// The Task resource a launch belongs to: `<job>-<task>` for a Job's task, the task's own name
/// for a standalone one.
pub fn task_resource_of(launch: &Launch) -> String {
    match &launch.job {
        Some(job) => names::task_resource_name(job, &launch.task.name),
        None => launch.task.name.clone(),
    }
}

/// The name of the worker pod of a launch.
pub fn pod_name_of(launch: &Launch) -> String {
    names::pod_name(&task_resource_of(launch), launch.lease.number)
}

fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar { name: name.to_owned(), value: Some(value.into()), ..EnvVar::default() }
}

/// The worker pod of `launch`, owned (as controller) by `owner`.
pub fn worker_pod(launch: &Launch, owner: OwnerReference, config: &WorkerPodConfig) -> Pod {
    let task_resource = task_resource_of(launch);
    let name = names::pod_name(&task_resource, launch.lease.number);
    let mut labels = names::common_labels("worker");
    labels.insert(names::TASK_LABEL.to_owned(), names::label_value(&task_resource));
    labels.insert(names::ATTEMPT_LABEL.to_owned(), launch.lease.number.to_string());
    if let Some(job) = &launch.job {
        labels.insert(names::JOB_LABEL.to_owned(), names::label_value(job));
    }
    let identity = PodAttempt { task: launch.lease.task, attempt: launch.lease.attempt, fence: launch.lease.fence };
    let mut annotations = BTreeMap::from([
        (names::TASK_ID_ANNOTATION.to_owned(), identity.task.0.to_string()),
        (names::ATTEMPT_ID_ANNOTATION.to_owned(), identity.attempt.0.to_string()),
        (names::FENCE_ANNOTATION.to_owned(), identity.fence.0.to_string()),
    ]);
    if let Some(timeout) = launch.task.timeout_seconds {
        annotations.insert(names::TIMEOUT_ANNOTATION.to_owned(), timeout.to_string());
    }

    let mut vars = vec![
        env("DUCKMESH_TASK_ID", identity.task.0.to_string()),
        env("DUCKMESH_ATTEMPT_ID", identity.attempt.0.to_string()),
        env("DUCKMESH_FENCE", identity.fence.0.to_string()),
        EnvVar {
            name: "DUCKMESH_RUNNER".into(),
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector { field_path: "metadata.name".into(), ..Default::default() }),
                ..Default::default()
            }),
            ..EnvVar::default()
        },
        EnvVar {
            name: "DUCKMESH_DATABASE_URL".into(),
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: config.database_secret.name.clone(),
                    key: config.database_secret.key.clone(),
                    optional: Some(false),
                }),
                ..Default::default()
            }),
            ..EnvVar::default()
        },
        env("DUCKMESH_CACHE_DIR", CACHE_DIR),
        env("DUCKMESH_WORK_DIR", SCRATCH_DIR),
        env("TMPDIR", SCRATCH_DIR),
    ];
    if let Some(traceparent) = &launch.traceparent {
        vars.push(env(duckmesh_telemetry::TRACEPARENT_ENV, traceparent.clone()));
    }
    let fixed: Vec<String> = vars.iter().map(|v| v.name.clone()).collect();
    vars.extend(
        config.env.iter().filter(|(name, _)| !fixed.contains(name)).map(|(name, value)| env(name, value.clone())),
    );

    let resources = resources_of(&launch.task.spec);
    let volume = |name: &str| Volume {
        name: name.to_owned(),
        empty_dir: Some(EmptyDirVolumeSource {
            size_limit: config.scratch_size_limit.clone().map(Quantity),
            ..EmptyDirVolumeSource::default()
        }),
        ..Volume::default()
    };
    let mount = |name: &str, path: &str| VolumeMount {
        name: name.to_owned(),
        mount_path: path.to_owned(),
        ..VolumeMount::default()
    };

    Pod {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: Some(launch.task.namespace.clone()),
            labels: Some(labels),
            annotations: Some(annotations),
            owner_references: Some(vec![owner]),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            restart_policy: Some("Never".into()),
            active_deadline_seconds: launch.task.timeout_seconds.map(pod_deadline_seconds),
            service_account_name: config.service_account.clone(),
            automount_service_account_token: Some(false),
            enable_service_links: Some(false),
            security_context: Some(PodSecurityContext {
                run_as_non_root: Some(true),
                run_as_user: Some(65_532),
                run_as_group: Some(65_532),
                fs_group: Some(65_532),
                seccomp_profile: Some(SeccompProfile { type_: "RuntimeDefault".into(), ..SeccompProfile::default() }),
                ..PodSecurityContext::default()
            }),
            containers: vec![Container {
                name: WORKER_CONTAINER.into(),
                image: Some(config.image.clone()),
                image_pull_policy: config.image_pull_policy.clone(),
                args: Some(vec!["worker".into()]),
                env: Some(vars),
                env_from: config.env_secret.as_ref().map(|secret| {
                    vec![EnvFromSource {
                        secret_ref: Some(SecretEnvSource { name: secret.clone(), optional: Some(false) }),
                        ..EnvFromSource::default()
                    }]
                }),
                resources,
                security_context: Some(SecurityContext {
                    allow_privilege_escalation: Some(false),
                    read_only_root_filesystem: Some(true),
                    run_as_non_root: Some(true),
                    privileged: Some(false),
                    capabilities: Some(Capabilities { drop: Some(vec!["ALL".into()]), ..Capabilities::default() }),
                    seccomp_profile: Some(SeccompProfile {
                        type_: "RuntimeDefault".into(),
                        ..SeccompProfile::default()
                    }),
                    ..SecurityContext::default()
                }),
                volume_mounts: Some(vec![mount("scratch", SCRATCH_DIR), mount("cache", CACHE_DIR)]),
                termination_message_policy: Some("FallbackToLogsOnError".into()),
                ..Container::default()
            }],
            volumes: Some(vec![volume("scratch"), volume("cache")]),
            ..PodSpec::default()
        }),
        status: None,
    }
}

/// Requests and limits from the task's `resources` (kept in the catalog's task spec): memory
/// is requested and limited (DuckDB's own limit is 80 % of it), CPU is requested only, so a
/// busy node throttles rather than a quota kill.
fn resources_of(spec: &serde_json::Value) -> Option<ResourceRequirements> {
    let resources = spec.get("resources")?;
    let memory = resources.get("memory").and_then(|v| v.as_str());
    let cpu = resources.get("cpu").and_then(|v| v.as_str());
    let mut requests = BTreeMap::new();
    let mut limits = BTreeMap::new();
    if let Some(memory) = memory {
        requests.insert("memory".to_owned(), Quantity(memory.to_owned()));
        limits.insert("memory".to_owned(), Quantity(memory.to_owned()));
    }
    if let Some(cpu) = cpu {
        requests.insert("cpu".to_owned(), Quantity(cpu.to_owned()));
    }
    if requests.is_empty() {
        return None;
    }
    Some(ResourceRequirements {
        requests: Some(requests),
        limits: (!limits.is_empty()).then_some(limits),
        ..ResourceRequirements::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use duckmesh_catalog::{Lease, TaskRecord};
    use duckmesh_core::{AttemptId, Fence, JobId, TaskId, TaskPhase};

    pub(crate) fn launch(job: Option<&str>, resources: serde_json::Value, timeout: Option<u32>) -> Launch {
        Launch {
            lease: Lease {
                task: TaskId(7),
                attempt: AttemptId(31),
                number: 2,
                fence: Fence(44),
                expires_at: Utc::now(),
            },
            task: TaskRecord {
                id: TaskId(7),
                job: job.map(|_| JobId(1)),
                namespace: "team".into(),
                name: "load".into(),
                tenant: "acme".into(),
                kind: "sql".into(),
                spec: serde_json::json!({"sql": "SELECT 1", "resources": resources}),
                depends_on: vec![],
                phase: TaskPhase::Leased,
                attempts: 2,
                max_attempts: 3,
                timeout_seconds: timeout,
                fence: Some(Fence(44)),
                next_retry_at: None,
                output: None,
                output_snapshot: None,
                last_error_code: None,
                last_error_message: None,
                started_at: None,
                finished_at: None,
            },
            job: job.map(str::to_owned),
            traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
        }
    }

    pub(crate) fn config() -> WorkerPodConfig {
        WorkerPodConfig {
            image: "ghcr.io/duckmesh/duckmesh:0.1.0".into(),
            image_pull_policy: Some("IfNotPresent".into()),
            service_account: Some("duckmesh-worker".into()),
            database_secret: SecretKey { name: "duckmesh-catalog".into(), key: "url".into() },
            env_secret: Some("duckmesh-store".into()),
            env: vec![("DUCKMESH_S3_BUCKET".into(), "lake".into()), ("DUCKMESH_FENCE".into(), "999".into())],
            scratch_size_limit: Some("10Gi".into()),
        }
    }

    fn owner() -> OwnerReference {
        OwnerReference {
            api_version: "duckmesh.io/v1alpha1".into(),
            kind: "Task".into(),
            name: "nightly-load".into(),
            uid: "task-uid".into(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }
    }

    fn env_of(pod: &Pod) -> BTreeMap<String, EnvVar> {
        pod.spec.as_ref().expect("spec").containers[0]
            .env
            .iter()
            .flatten()
            .map(|v| (v.name.clone(), v.clone()))
            .collect()
    }

    #[test]
    fn worker_pod_identity_env_and_ownership() {
        let pod = worker_pod(
            &launch(Some("nightly"), serde_json::json!({"memory": "2Gi", "cpu": "500m"}), Some(600)),
            owner(),
            &config(),
        );
        assert_eq!(pod.metadata.name.as_deref(), Some("nightly-load-a2"));
        assert_eq!(pod.metadata.namespace.as_deref(), Some("team"));
        assert_eq!(pod.metadata.owner_references, Some(vec![owner()]));
        let labels = pod.metadata.labels.clone().unwrap_or_default();
        for (key, value) in [
            (names::MANAGED_BY, names::MANAGER),
            (names::COMPONENT, "worker"),
            (names::APP_NAME, "duckmesh"),
            (names::JOB_LABEL, "nightly"),
            (names::TASK_LABEL, "nightly-load"),
            (names::ATTEMPT_LABEL, "2"),
        ] {
            assert_eq!(labels.get(key).map(String::as_str), Some(value), "label {key}");
        }
        let identity = crate::decide::pod_attempt(&pod).expect("annotated");
        assert_eq!((identity.task, identity.attempt, identity.fence), (TaskId(7), AttemptId(31), Fence(44)));

        let env = env_of(&pod);
        let value = |name: &str| env.get(name).and_then(|v| v.value.clone());
        assert_eq!(value("DUCKMESH_TASK_ID").as_deref(), Some("7"));
        assert_eq!(value("DUCKMESH_ATTEMPT_ID").as_deref(), Some("31"));
        assert_eq!(value("DUCKMESH_FENCE").as_deref(), Some("44"), "config cannot override the identity");
        assert_eq!(value("TRACEPARENT").as_deref(), Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"));
        assert_eq!(value("DUCKMESH_S3_BUCKET").as_deref(), Some("lake"));
        let runner =
            env["DUCKMESH_RUNNER"].value_from.as_ref().and_then(|s| s.field_ref.as_ref()).expect("downward API");
        assert_eq!(runner.field_path, "metadata.name");
        let url =
            env["DUCKMESH_DATABASE_URL"].value_from.as_ref().and_then(|s| s.secret_key_ref.as_ref()).expect("secret");
        assert_eq!((url.name.as_str(), url.key.as_str()), ("duckmesh-catalog", "url"));
        assert!(env["DUCKMESH_DATABASE_URL"].value.is_none(), "the URL is never in the pod spec");

        let spec = pod.spec.as_ref().expect("spec");
        assert_eq!(spec.restart_policy.as_deref(), Some("Never"));
        assert_eq!(spec.active_deadline_seconds, Some(660), "the task timeout (600 s) plus 10 %");
        assert_eq!(
            pod.metadata.annotations.as_ref().and_then(|a| a.get(names::TIMEOUT_ANNOTATION)).map(String::as_str),
            Some("600")
        );
        assert_eq!(spec.service_account_name.as_deref(), Some("duckmesh-worker"));
        let container = &spec.containers[0];
        assert_eq!(container.args, Some(vec!["worker".to_owned()]));
        assert_eq!(container.image.as_deref(), Some("ghcr.io/duckmesh/duckmesh:0.1.0"));
        let resources = container.resources.as_ref().expect("resources");
        let get = |map: &Option<BTreeMap<String, Quantity>>, key: &str| {
            map.as_ref().and_then(|m| m.get(key)).map(|q| q.0.clone())
        };
        assert_eq!(get(&resources.requests, "memory").as_deref(), Some("2Gi"));
        assert_eq!(get(&resources.limits, "memory").as_deref(), Some("2Gi"));
        assert_eq!(get(&resources.requests, "cpu").as_deref(), Some("500m"));
        assert_eq!(get(&resources.limits, "cpu"), None);
        let secret = container.env_from.as_ref().and_then(|e| e[0].secret_ref.as_ref()).expect("envFrom");
        assert_eq!(secret.name, "duckmesh-store");
    }

    #[test]
    fn the_pod_deadline_leaves_the_worker_time_to_time_out_itself() {
        let cases = [(1, 31), (60, 90), (300, 330), (600, 660), (601, 662), (3600, 3960), (604_800, 665_280)];
        for (timeout, deadline) in cases {
            assert_eq!(pod_deadline_seconds(timeout), deadline, "{timeout}");
            assert!(pod_deadline_seconds(timeout) >= i64::from(timeout) + POD_DEADLINE_MIN_MARGIN_SECONDS);
        }
    }

    #[test]
    fn worker_pod_is_locked_down() {
        let pod = worker_pod(&launch(None, serde_json::Value::Null, None), owner(), &config());
        let spec = pod.spec.as_ref().expect("spec");
        assert_eq!(pod.metadata.name.as_deref(), Some("load-a2"), "standalone tasks are named after themselves");
        assert_eq!(spec.active_deadline_seconds, None);
        let pod_security = spec.security_context.as_ref().expect("pod security context");
        assert_eq!(pod_security.run_as_non_root, Some(true));
        assert_eq!(pod_security.seccomp_profile.as_ref().map(|s| s.type_.as_str()), Some("RuntimeDefault"));
        let container = &spec.containers[0];
        let security = container.security_context.as_ref().expect("container security context");
        assert_eq!(security.allow_privilege_escalation, Some(false));
        assert_eq!(security.read_only_root_filesystem, Some(true));
        assert_eq!(security.run_as_non_root, Some(true));
        assert_eq!(security.capabilities.as_ref().and_then(|c| c.drop.clone()), Some(vec!["ALL".to_owned()]));
        assert_eq!(security.seccomp_profile.as_ref().map(|s| s.type_.as_str()), Some("RuntimeDefault"));
        assert!(container.resources.is_none());
        // The only writable paths are emptyDirs: /tmp (scratch) and the cache.
        let mounts: Vec<(&str, &str)> =
            container.volume_mounts.iter().flatten().map(|m| (m.name.as_str(), m.mount_path.as_str())).collect();
        assert_eq!(mounts, [("scratch", SCRATCH_DIR), ("cache", CACHE_DIR)]);
        for volume in spec.volumes.iter().flatten() {
            let empty_dir = volume.empty_dir.as_ref().expect("emptyDir");
            assert_eq!(empty_dir.size_limit.as_ref().map(|q| q.0.as_str()), Some("10Gi"));
        }
        let env = env_of(&pod);
        assert_eq!(env["DUCKMESH_CACHE_DIR"].value.as_deref(), Some(CACHE_DIR));
        assert_eq!(env["TMPDIR"].value.as_deref(), Some(SCRATCH_DIR));
    }

    #[test]
    fn only_plain_settings_are_forwarded() {
        let vars = [
            ("DUCKMESH_S3_BUCKET", "lake"),
            ("DUCKMESH_S3_ENDPOINT", "http://minio:9000"),
            ("AWS_REGION", "eu-west-1"),
            ("AWS_ACCESS_KEY_ID", "AKIA"),
            ("AWS_SECRET_ACCESS_KEY", "s"),
            ("DUCKMESH_DATABASE_URL", "postgres://u:p@h/db"),
            ("DUCKMESH_S3_SECRET_KEY", "s"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://otel:4318"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "authorization=x"),
            ("HOME", "/root"),
            ("DUCKMESH_TASK_LEASE_SECONDS", "120"),
        ];
        let forwarded = forwarded_env(vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        let names: Vec<&str> = forwarded.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            names,
            [
                "AWS_REGION",
                "DUCKMESH_S3_BUCKET",
                "DUCKMESH_S3_ENDPOINT",
                "DUCKMESH_TASK_LEASE_SECONDS",
                "OTEL_EXPORTER_OTLP_ENDPOINT"
            ]
        );
    }
}
