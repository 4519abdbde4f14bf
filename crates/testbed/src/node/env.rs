//! A container's environment, resolved like the kubelet does: the `kubernetes` Service variables
//! first (pointing at the API server on loopback, since the ClusterIP is not routable here), then
//! `envFrom`, then `env` in order, each value `$(VAR)`-expanded against what came before.

use super::expand::{expand, parse_quantity, resource_value};
use k8s_openapi::api::core::v1::{ConfigMap, Container, ObjectFieldSelector, Pod, ResourceFieldSelector, Secret};
use kube::Client;
use kube::api::Api;
use std::collections::BTreeMap;

/// The node's allocatable resources, the default of unset limits in `resourceFieldRef`.
pub const ALLOCATABLE_CPU: &str = "32";
/// See [`ALLOCATABLE_CPU`].
pub const ALLOCATABLE_MEMORY: &str = "64Gi";
/// See [`ALLOCATABLE_CPU`].
pub const ALLOCATABLE_EPHEMERAL_STORAGE: &str = "100Gi";
/// See [`ALLOCATABLE_CPU`].
pub const ALLOCATABLE_PODS: &str = "250";

/// Why an environment could not be built: the kubelet's `CreateContainerConfigError`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl From<kube::Error> for ConfigError {
    fn from(error: kube::Error) -> Self {
        Self(error.to_string())
    }
}

/// Secrets and ConfigMaps of one namespace, read at most once per resolution.
pub struct Sources {
    secrets: Api<Secret>,
    config_maps: Api<ConfigMap>,
    secret_cache: BTreeMap<String, Option<BTreeMap<String, String>>>,
    config_map_cache: BTreeMap<String, Option<BTreeMap<String, String>>>,
}

impl Sources {
    /// Reads from `namespace`.
    pub fn new(client: Client, namespace: &str) -> Self {
        Self {
            secrets: Api::namespaced(client.clone(), namespace),
            config_maps: Api::namespaced(client, namespace),
            secret_cache: BTreeMap::new(),
            config_map_cache: BTreeMap::new(),
        }
    }

    /// A Secret's data as text (`None` when it does not exist).
    pub async fn secret(&mut self, name: &str) -> Result<Option<BTreeMap<String, String>>, ConfigError> {
        if let Some(cached) = self.secret_cache.get(name) {
            return Ok(cached.clone());
        }
        let data = self.secret_bytes(name).await?.map(|data| {
            data.into_iter().map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned())).collect::<BTreeMap<_, _>>()
        });
        self.secret_cache.insert(name.to_owned(), data.clone());
        Ok(data)
    }

    /// A Secret's data as bytes (`None` when it does not exist).
    pub async fn secret_bytes(&mut self, name: &str) -> Result<Option<BTreeMap<String, Vec<u8>>>, ConfigError> {
        Ok(self.secrets.get_opt(name).await?.map(|secret| {
            let mut data: BTreeMap<String, Vec<u8>> =
                secret.data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)).collect();
            for (k, v) in secret.string_data.unwrap_or_default() {
                data.insert(k, v.into_bytes());
            }
            data
        }))
    }

    /// A ConfigMap's data and binary data as bytes (`None` when it does not exist).
    pub async fn config_map_bytes(&mut self, name: &str) -> Result<Option<BTreeMap<String, Vec<u8>>>, ConfigError> {
        Ok(self.config_maps.get_opt(name).await?.map(|map| {
            let mut data: BTreeMap<String, Vec<u8>> =
                map.binary_data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)).collect();
            for (k, v) in map.data.unwrap_or_default() {
                data.insert(k, v.into_bytes());
            }
            data
        }))
    }

    /// A ConfigMap's data as text (`None` when it does not exist).
    pub async fn config_map(&mut self, name: &str) -> Result<Option<BTreeMap<String, String>>, ConfigError> {
        if let Some(cached) = self.config_map_cache.get(name) {
            return Ok(cached.clone());
        }
        let data = self.config_map_bytes(name).await?.map(|data| {
            data.into_iter().map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned())).collect::<BTreeMap<_, _>>()
        });
        self.config_map_cache.insert(name.to_owned(), data.clone());
        Ok(data)
    }
}

/// A `fieldRef` value (the downward API), for env vars and downwardAPI volume files.
pub fn field_value(pod: &Pod, selector: &ObjectFieldSelector) -> Result<String, ConfigError> {
    let metadata = &pod.metadata;
    let spec = pod.spec.as_ref();
    let path = selector.field_path.as_str();
    let map_entry = |map: &Option<BTreeMap<String, String>>, prefix: &str| -> Option<String> {
        let key = path.strip_prefix(prefix)?.strip_suffix("']")?;
        Some(map.as_ref().and_then(|m| m.get(key)).cloned().unwrap_or_default())
    };
    let format_map = |map: &Option<BTreeMap<String, String>>| {
        map.as_ref()
            .map(|m| m.iter().map(|(k, v)| format!("{k}={v:?}")).collect::<Vec<_>>().join("\n"))
            .unwrap_or_default()
    };
    let value = match path {
        "metadata.name" => metadata.name.clone().unwrap_or_default(),
        "metadata.namespace" => metadata.namespace.clone().unwrap_or_default(),
        "metadata.uid" => metadata.uid.clone().unwrap_or_default(),
        "metadata.labels" => format_map(&metadata.labels),
        "metadata.annotations" => format_map(&metadata.annotations),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        "spec.serviceAccountName" => spec.and_then(|s| s.service_account_name.clone()).unwrap_or_default(),
        "status.hostIP" | "status.hostIPs" => super::NODE_IP.to_owned(),
        // The node puts the address it gave the pod in the pod it runs (see `pod::run`).
        "status.podIP" | "status.podIPs" => {
            pod.status.as_ref().and_then(|s| s.pod_ip.clone()).unwrap_or_else(|| super::NODE_IP.to_owned())
        }
        _ => {
            if let Some(value) = map_entry(&metadata.labels, "metadata.labels['") {
                value
            } else if let Some(value) = map_entry(&metadata.annotations, "metadata.annotations['") {
                value
            } else {
                return Err(ConfigError(format!("unsupported fieldRef fieldPath {path:?}")));
            }
        }
    };
    Ok(value)
}

/// A `resourceFieldRef` value for `container` (limits default to the node's allocatable).
pub fn resource_field_value(container: &Container, selector: &ResourceFieldSelector) -> Result<String, ConfigError> {
    let resources = container.resources.as_ref();
    let (kind, name) = selector
        .resource
        .split_once('.')
        .ok_or_else(|| ConfigError(format!("unsupported resourceFieldRef resource {:?}", selector.resource)))?;
    let set = match kind {
        "limits" => resources.and_then(|r| r.limits.as_ref()),
        "requests" => resources.and_then(|r| r.requests.as_ref()),
        _ => None,
    }
    .and_then(|m| m.get(name))
    .map(|q| q.0.clone());
    let quantity = match (set, kind, name) {
        (Some(text), _, _) => text,
        (None, "limits", "cpu") => ALLOCATABLE_CPU.to_owned(),
        (None, "limits", "memory") => ALLOCATABLE_MEMORY.to_owned(),
        (None, "limits", "ephemeral-storage") => ALLOCATABLE_EPHEMERAL_STORAGE.to_owned(),
        (None, "requests", "cpu" | "memory" | "ephemeral-storage") => "0".to_owned(),
        _ => return Err(ConfigError(format!("unsupported resourceFieldRef resource {:?}", selector.resource))),
    };
    let value = parse_quantity(&quantity)
        .ok_or_else(|| ConfigError(format!("invalid quantity {quantity:?} for {}", selector.resource)))?;
    resource_value(&selector.resource, value, selector.divisor.as_ref().map(|d| d.0.as_str()))
        .ok_or_else(|| ConfigError(format!("invalid divisor for {}", selector.resource)))
}

/// The variables the kubelet adds for the `kubernetes` Service, aimed at the API server's real
/// address (`127.0.0.1:<port>`).
pub fn service_env(api_port: u16) -> Vec<(String, String)> {
    let host = super::NODE_IP;
    vec![
        ("KUBERNETES_SERVICE_HOST".into(), host.into()),
        ("KUBERNETES_SERVICE_PORT".into(), api_port.to_string()),
        ("KUBERNETES_SERVICE_PORT_HTTPS".into(), api_port.to_string()),
        ("KUBERNETES_PORT".into(), format!("tcp://{host}:{api_port}")),
        (format!("KUBERNETES_PORT_{api_port}_TCP"), format!("tcp://{host}:{api_port}")),
        (format!("KUBERNETES_PORT_{api_port}_TCP_PROTO"), "tcp".into()),
        (format!("KUBERNETES_PORT_{api_port}_TCP_PORT"), api_port.to_string()),
        (format!("KUBERNETES_PORT_{api_port}_TCP_ADDR"), host.into()),
    ]
}

fn is_env_name(name: &str) -> bool {
    !name.is_empty()
        && !name.contains('=')
        && name.chars().all(|c| c.is_ascii_graphic())
        && !name.starts_with(|c: char| c.is_ascii_digit())
}

/// Resolves `container`'s environment (without PATH, HOSTNAME, HOME, which the runtime adds).
/// A missing required Secret, ConfigMap or key is a [`ConfigError`] with the kubelet's message.
pub async fn resolve(
    client: Client,
    pod: &Pod,
    container: &Container,
    api_port: u16,
) -> Result<Vec<(String, String)>, ConfigError> {
    let namespace = pod.metadata.namespace.clone().unwrap_or_else(|| "default".into());
    let mut sources = Sources::new(client, &namespace);
    let mut env: Vec<(String, String)> = service_env(api_port);
    fn set(env: &mut Vec<(String, String)>, name: String, value: String) {
        match env.iter_mut().find(|(k, _)| *k == name) {
            Some(entry) => entry.1 = value,
            None => env.push((name, value)),
        }
    }
    for from in container.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        let data = if let Some(reference) = &from.config_map_ref {
            let name = reference.name.clone();
            match sources.config_map(&name).await? {
                Some(data) => data,
                None if reference.optional == Some(true) => continue,
                None => return Err(ConfigError(format!("configmap \"{name}\" not found"))),
            }
        } else if let Some(reference) = &from.secret_ref {
            let name = reference.name.clone();
            match sources.secret(&name).await? {
                Some(data) => data,
                None if reference.optional == Some(true) => continue,
                None => return Err(ConfigError(format!("secret \"{name}\" not found"))),
            }
        } else {
            continue;
        };
        for (key, value) in data {
            let name = format!("{prefix}{key}");
            // The kubelet skips invalid names (with an event) rather than failing the container.
            if is_env_name(&name) {
                set(&mut env, name, value);
            }
        }
    }
    for var in container.env.iter().flatten() {
        let value = if let Some(source) = &var.value_from {
            if let Some(selector) = &source.field_ref {
                field_value(pod, selector)?
            } else if let Some(selector) = &source.resource_field_ref {
                resource_field_value(container, selector)?
            } else if let Some(selector) = &source.secret_key_ref {
                let optional = selector.optional == Some(true);
                match sources.secret(&selector.name).await? {
                    Some(data) => match data.get(&selector.key) {
                        Some(value) => value.clone(),
                        None if optional => continue,
                        None => {
                            return Err(ConfigError(format!(
                                "couldn't find key {} in Secret {namespace}/{}",
                                selector.key, selector.name
                            )));
                        }
                    },
                    None if optional => continue,
                    None => return Err(ConfigError(format!("secret \"{}\" not found", selector.name))),
                }
            } else if let Some(selector) = &source.config_map_key_ref {
                let optional = selector.optional == Some(true);
                match sources.config_map(&selector.name).await? {
                    Some(data) => match data.get(&selector.key) {
                        Some(value) => value.clone(),
                        None if optional => continue,
                        None => {
                            return Err(ConfigError(format!(
                                "couldn't find key {} in ConfigMap {namespace}/{}",
                                selector.key, selector.name
                            )));
                        }
                    },
                    None if optional => continue,
                    None => return Err(ConfigError(format!("configmap \"{}\" not found", selector.name))),
                }
            } else {
                return Err(ConfigError(format!("env {}: unsupported valueFrom", var.name)));
            }
        } else {
            let known = env.clone();
            expand(var.value.as_deref().unwrap_or_default(), |name| {
                known.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
            })
        };
        set(&mut env, var.name.clone(), value);
    }
    Ok(env)
}
