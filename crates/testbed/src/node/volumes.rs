//! A pod's volumes, materialised as directories under the pod's directory (emptyDir, secret,
//! configMap, downwardAPI, projected with service-account tokens from the TokenRequest API,
//! hostPath), and each container's mounts as a plan of bind mounts the runtime's wrapper
//! performs inside the container's private mount namespace.

use super::env::{ConfigError, Sources, field_value, resource_field_value};
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{
    Container, DownwardAPIVolumeFile, KeyToPath, Pod, ServiceAccount, Volume, VolumeMount,
};
use kube::Client;
use kube::api::{Api, PostParams};
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Why a volume could not be set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VolumeError {
    /// Something it needs is missing (a Secret, a ConfigMap, a key): retried, like the kubelet's
    /// `FailedMount`.
    Retry(String),
    /// The pod cannot run on this node (an unsupported volume type).
    Fatal(String),
}

impl From<ConfigError> for VolumeError {
    fn from(error: ConfigError) -> Self {
        Self::Retry(error.0)
    }
}

fn io(step: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> VolumeError {
    move |error| VolumeError::Retry(format!("{step}: {error}"))
}

/// One file to write into a volume directory.
struct File {
    path: String,
    contents: Vec<u8>,
    mode: Option<i32>,
}

fn check_relative(path: &str) -> Result<(), VolumeError> {
    let p = Path::new(path);
    if path.is_empty() || p.is_absolute() || p.components().any(|c| matches!(c, std::path::Component::ParentDir)) {
        return Err(VolumeError::Fatal(format!("invalid volume file path {path:?}")));
    }
    Ok(())
}

/// The files of a Secret or ConfigMap source: every key, or only `items` (key → path).
fn key_files(
    kind: &str,
    namespace: &str,
    name: &str,
    data: Option<BTreeMap<String, Vec<u8>>>,
    items: Option<&Vec<KeyToPath>>,
    optional: bool,
) -> Result<Vec<File>, VolumeError> {
    let Some(data) = data else {
        if optional {
            return Ok(Vec::new());
        }
        return Err(VolumeError::Retry(format!("{} \"{name}\" not found", kind.to_lowercase())));
    };
    match items {
        None => Ok(data.into_iter().map(|(path, contents)| File { path, contents, mode: None }).collect()),
        Some(items) => {
            let mut files = Vec::new();
            for item in items {
                check_relative(&item.path)?;
                match data.get(&item.key) {
                    Some(contents) => {
                        files.push(File { path: item.path.clone(), contents: contents.clone(), mode: item.mode })
                    }
                    None if optional => {}
                    None => {
                        let what = if kind == "Secret" {
                            "secret references non-existent secret key"
                        } else {
                            "configmap references non-existent config key"
                        };
                        return Err(VolumeError::Retry(format!("{what}: {} ({kind} {namespace}/{name})", item.key)));
                    }
                }
            }
            Ok(files)
        }
    }
}

fn downward_files(pod: &Pod, items: &[DownwardAPIVolumeFile]) -> Result<Vec<File>, VolumeError> {
    let mut files = Vec::new();
    for item in items {
        check_relative(&item.path)?;
        let value = if let Some(selector) = &item.field_ref {
            field_value(pod, selector)?
        } else if let Some(selector) = &item.resource_field_ref {
            let container_name = selector.container_name.clone().unwrap_or_default();
            let containers = pod.spec.as_ref().map(|s| s.containers.as_slice()).unwrap_or_default();
            let container = containers
                .iter()
                .find(|c| c.name == container_name)
                .or_else(|| containers.first())
                .ok_or_else(|| VolumeError::Fatal("downwardAPI resourceFieldRef without a container".into()))?;
            resource_field_value(container, selector)?
        } else {
            continue;
        };
        files.push(File { path: item.path.clone(), contents: value.into_bytes(), mode: item.mode });
    }
    Ok(files)
}

/// The pod's materialised volumes: volume name → host directory (or file for hostPath files).
#[derive(Debug, Clone, Default)]
pub struct Volumes {
    /// Volume name → host path.
    pub paths: BTreeMap<String, PathBuf>,
}

/// Who owns volume files: `fsGroup` as the group (and the pod user's write access to emptyDirs).
#[derive(Debug, Clone, Copy)]
pub struct Ownership {
    /// The pod's `securityContext.fsGroup`.
    pub fs_group: Option<u32>,
}

/// Materialises every volume of `pod` under `dir` (one subdirectory per volume).
pub async fn materialise(client: &Client, pod: &Pod, dir: &Path, ownership: Ownership) -> Result<Volumes, VolumeError> {
    let namespace = pod.metadata.namespace.clone().unwrap_or_else(|| "default".into());
    let mut sources = Sources::new(client.clone(), &namespace);
    let mut volumes = Volumes::default();
    let spec_volumes: Vec<Volume> = pod.spec.as_ref().and_then(|s| s.volumes.clone()).unwrap_or_default();
    for volume in &spec_volumes {
        let target = dir.join(&volume.name);
        if let Some(host) = &volume.host_path {
            volumes.paths.insert(volume.name.clone(), PathBuf::from(&host.path));
            if host.type_.as_deref() == Some("DirectoryOrCreate") {
                std::fs::create_dir_all(&host.path).map_err(io(format!("creating hostPath {}", host.path)))?;
            }
            continue;
        }
        let (files, default_mode) = if volume.empty_dir.is_some() {
            // Created once: an emptyDir survives container restarts.
            if !target.exists() {
                std::fs::create_dir_all(&target).map_err(io(format!("creating {}", target.display())))?;
                std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o777))
                    .map_err(io(format!("chmod {}", target.display())))?;
                if let Some(gid) = ownership.fs_group {
                    chown(&target, gid)?;
                }
            }
            volumes.paths.insert(volume.name.clone(), target);
            continue;
        } else if let Some(source) = &volume.secret {
            let name = source.secret_name.clone().unwrap_or_default();
            let data = sources.secret_bytes(&name).await?;
            let files =
                key_files("Secret", &namespace, &name, data, source.items.as_ref(), source.optional == Some(true))?;
            (files, source.default_mode)
        } else if let Some(source) = &volume.config_map {
            let name = source.name.clone();
            let data = sources.config_map_bytes(&name).await?;
            let files =
                key_files("ConfigMap", &namespace, &name, data, source.items.as_ref(), source.optional == Some(true))?;
            (files, source.default_mode)
        } else if let Some(source) = &volume.downward_api {
            (downward_files(pod, source.items.as_deref().unwrap_or_default())?, source.default_mode)
        } else if let Some(projected) = &volume.projected {
            let mut files = Vec::new();
            for source in projected.sources.iter().flatten() {
                if let Some(secret) = &source.secret {
                    let data = sources.secret_bytes(&secret.name).await?;
                    let optional = secret.optional == Some(true);
                    files.extend(key_files("Secret", &namespace, &secret.name, data, secret.items.as_ref(), optional)?);
                } else if let Some(map) = &source.config_map {
                    let data = sources.config_map_bytes(&map.name).await?;
                    let optional = map.optional == Some(true);
                    files.extend(key_files("ConfigMap", &namespace, &map.name, data, map.items.as_ref(), optional)?);
                } else if let Some(downward) = &source.downward_api {
                    files.extend(downward_files(pod, downward.items.as_deref().unwrap_or_default())?);
                } else if let Some(token) = &source.service_account_token {
                    check_relative(&token.path)?;
                    let issued = request_token(client, pod, token.audience.clone(), token.expiration_seconds).await?;
                    files.push(File { path: token.path.clone(), contents: issued.into_bytes(), mode: None });
                } else {
                    return Err(VolumeError::Fatal(format!(
                        "volume {}: projected source kind not supported by the test node",
                        volume.name
                    )));
                }
            }
            (files, projected.default_mode)
        } else {
            return Err(VolumeError::Fatal(format!(
                "volume {}: only emptyDir, secret, configMap, downwardAPI, projected and hostPath volumes are supported by the test node",
                volume.name
            )));
        };
        write_files(&target, &files, default_mode.unwrap_or(0o644), ownership)?;
        volumes.paths.insert(volume.name.clone(), target);
    }
    Ok(volumes)
}

fn chown(path: &Path, gid: u32) -> Result<(), VolumeError> {
    std::os::unix::fs::chown(path, None, Some(gid)).map_err(io(format!("chown {}", path.display())))
}

fn write_files(dir: &Path, files: &[File], default_mode: i32, ownership: Ownership) -> Result<(), VolumeError> {
    // Written next to the old contents, then swapped in, so a container never sees half a volume.
    let staging = dir.with_extension("staging");
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging).map_err(io(format!("creating {}", staging.display())))?;
    std::fs::set_permissions(&staging, std::fs::Permissions::from_mode(0o755))
        .map_err(io(format!("chmod {}", staging.display())))?;
    for file in files {
        let path = staging.join(&file.path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io(format!("creating {}", parent.display())))?;
        }
        std::fs::write(&path, &file.contents).map_err(io(format!("writing {}", path.display())))?;
        let mut mode = u32::try_from(file.mode.unwrap_or(default_mode)).unwrap_or(0o644) & 0o777;
        if let Some(gid) = ownership.fs_group {
            // The kubelet makes fsGroup-owned volume files group-readable.
            mode |= 0o040;
            chown(&path, gid)?;
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
            .map_err(io(format!("chmod {}", path.display())))?;
    }
    if let Some(gid) = ownership.fs_group {
        chown(&staging, gid)?;
    }
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(io(format!("removing {}", dir.display())))?;
    }
    std::fs::rename(&staging, dir).map_err(io(format!("renaming {}", staging.display())))
}

/// A bound token for the pod's service account (the kubelet's projected token).
async fn request_token(
    client: &Client,
    pod: &Pod,
    audience: Option<String>,
    expiration_seconds: Option<i64>,
) -> Result<String, VolumeError> {
    let namespace = pod.metadata.namespace.clone().unwrap_or_else(|| "default".into());
    let account = pod.spec.as_ref().and_then(|s| s.service_account_name.clone()).unwrap_or_else(|| "default".into());
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &namespace);
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: audience.into_iter().filter(|a| !a.is_empty()).collect(),
            expiration_seconds: Some(expiration_seconds.unwrap_or(3600)),
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: pod.metadata.name.clone(),
                uid: pod.metadata.uid.clone(),
            }),
        },
        ..TokenRequest::default()
    };
    let issued = accounts.create_token_request(&account, &PostParams::default(), &request).await.map_err(|e| {
        VolumeError::Retry(format!("requesting a token for service account {namespace}/{account}: {e}"))
    })?;
    Ok(issued.status.map(|s| s.token).unwrap_or_default())
}

/// One bind mount of a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// The host path.
    pub source: PathBuf,
    /// The container path.
    pub target: PathBuf,
    /// Mounted read-only.
    pub read_only: bool,
}

/// The container's bind mounts, parents before children. Fails when a mount is not possible
/// (an unknown volume, a subPath escaping its volume) or would hide a path in `protected`
/// (the container's executable, the runtime's tools, the node's directory).
pub fn plan(container: &Container, volumes: &Volumes, protected: &[PathBuf]) -> Result<Vec<Mount>, String> {
    let mut mounts = Vec::new();
    for mount in container.volume_mounts.iter().flatten() {
        mounts.push(one_mount(mount, volumes, protected)?);
    }
    mounts.sort_by_key(|m| m.target.components().count());
    Ok(mounts)
}

fn one_mount(mount: &VolumeMount, volumes: &Volumes, protected: &[PathBuf]) -> Result<Mount, String> {
    let base = volumes
        .paths
        .get(&mount.name)
        .ok_or_else(|| format!("volumeMount {}: no volume named {:?} in the pod", mount.mount_path, mount.name))?;
    let target = PathBuf::from(&mount.mount_path);
    if !target.is_absolute() {
        return Err(format!("volumeMount {}: mountPath must be absolute", mount.mount_path));
    }
    for path in protected {
        if path.starts_with(&target) {
            return Err(format!(
                "volumeMount {} of volume {} would hide {} (the test node runs containers on the host's file system; mount somewhere else)",
                mount.mount_path,
                mount.name,
                path.display()
            ));
        }
    }
    let source = match mount.sub_path.as_deref().filter(|s| !s.is_empty()) {
        Some(sub) => {
            check_relative(sub).map_err(|_| format!("volumeMount {}: invalid subPath {sub:?}", mount.mount_path))?;
            let source = base.join(sub);
            if !source.exists() {
                // Like the kubelet, a missing subPath of a writable volume is created as a directory.
                std::fs::create_dir_all(&source).map_err(|e| format!("creating subPath {}: {e}", source.display()))?;
                let _ = std::fs::set_permissions(&source, std::fs::Permissions::from_mode(0o777));
            }
            source
        }
        None => base.clone(),
    };
    Ok(Mount { source, target, read_only: mount.read_only == Some(true) })
}
