//! A whole test bed in one value: a [`ControlPlane`] and a [`TestNode`] named `testnode`.

use crate::node::{TestNode, TestNodeOptions};
use crate::{ControlPlane, ControlPlaneOptions, Result};
use kube::Client;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

/// The test node's name in a [`Bed`].
pub const NODE_NAME: &str = "testnode";

/// How to start a [`Bed`].
#[derive(Debug, Clone, Default)]
pub struct BedOptions {
    /// Image reference → local executable, for the test node.
    pub images: BTreeMap<String, PathBuf>,
    /// The control plane's options (directory, binaries).
    pub control_plane: ControlPlaneOptions,
}

/// A control plane with a test node. Dropping it stops the node (killing its pods' processes),
/// then the control plane.
pub struct Bed {
    // Dropped in declaration order: the node first.
    node: Option<TestNode>,
    control_plane: ControlPlane,
    client: Client,
}

impl Bed {
    /// Starts the control plane, then the test node.
    pub async fn start(options: BedOptions) -> Result<Self> {
        let control_plane = ControlPlane::start(options.control_plane).await?;
        let client = control_plane.client().await?;
        let node_options = TestNodeOptions::for_control_plane(&control_plane, NODE_NAME, options.images);
        let node = TestNode::start(client.clone(), node_options).await?;
        Ok(Self { node: Some(node), control_plane, client })
    }

    /// An admin client.
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// The pinned `kubectl` with the admin kubeconfig.
    pub fn kubectl(&self) -> Command {
        self.control_plane.kubectl()
    }

    /// The control plane.
    pub fn control_plane(&self) -> &ControlPlane {
        &self.control_plane
    }

    /// The control plane, to restart parts of it.
    pub fn control_plane_mut(&mut self) -> &mut ControlPlane {
        &mut self.control_plane
    }

    /// The test node.
    ///
    /// # Panics
    ///
    /// Never: the node exists until [`Bed::stop`] consumes the bed.
    pub fn node(&self) -> &TestNode {
        match &self.node {
            Some(node) => node,
            None => unreachable!("the node lives as long as the bed"),
        }
    }

    /// Stops the node (waiting for its pods' processes to end), then the control plane.
    pub async fn stop(mut self) {
        if let Some(mut node) = self.node.take() {
            node.stop().await;
        }
        self.control_plane.stop();
    }
}

impl std::fmt::Debug for Bed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bed")
            .field("node", &self.node)
            .field("control_plane", &self.control_plane)
            .finish_non_exhaustive()
    }
}

impl Drop for Bed {
    fn drop(&mut self) {
        drop(self.node.take());
        self.control_plane.stop();
    }
}
